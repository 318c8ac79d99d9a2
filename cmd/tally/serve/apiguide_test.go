package serve_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	inventoryv1 "github.com/tally-oss/tally/gen/tally/inventory/v1"
)

// The API guide (docs/api.md) has a section for every RPC of both
// services, each with grpcurl, curl, Go and TypeScript examples, and every
// curl example, run by bash as written (against this test's tally serve),
// is answered 200.
func TestAPIGuideExamplesRun(t *testing.T) {
	b, err := os.ReadFile("../../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	sections := map[string]string{}
	for _, part := range strings.Split(doc, "\n### ")[1:] {
		name, body, _ := strings.Cut(part, "\n")
		sections[strings.TrimSpace(name)] = body
	}
	for _, fd := range []protoreflect.FileDescriptor{inventoryv1.File_tally_inventory_v1_command_proto, inventoryv1.File_tally_inventory_v1_query_proto} {
		for i := range fd.Services().Len() {
			methods := fd.Services().Get(i).Methods()
			for j := range methods.Len() {
				name := string(methods.Get(j).Name())
				body, ok := sections[name]
				if !ok {
					t.Errorf("docs/api.md has no section ### %s", name)
					continue
				}
				for _, lang := range []string{"```sh\ngrpcurl", "```go\n", "```ts\n"} {
					if !strings.Contains(body, lang) {
						t.Errorf("docs/api.md ### %s has no %q example", name, strings.SplitN(lang, "\n", 2)[0])
					}
				}
			}
		}
	}

	curl := regexp.MustCompile("(?s)```sh\n(curl [^`]*?)\n```")
	ran := 0
	for _, m := range curl.FindAllStringSubmatch(doc, -1) {
		cmd := strings.ReplaceAll(m[1], "127.0.0.1:8080", addr) + ` -w '\n%{http_code}'`
		out, err := exec.Command("bash", "-c", cmd).Output()
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		text := strings.TrimSpace(string(out))
		nl := strings.LastIndex(text, "\n")
		answer, code := text[:max(nl, 0)], text[nl+1:]
		if code != "200" {
			t.Errorf("%s\nanswered %s: %s", m[1], code, answer)
		}
		ran++
	}
	if ran < 18 {
		t.Fatalf("ran %d curl examples, want one per unary RPC (18)", ran)
	}
}
