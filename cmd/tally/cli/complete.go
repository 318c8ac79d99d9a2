package cli

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// Complete returns the completions of cur after words (the words typed
// after "tally"): subcommand names, a group's commands, and the flags of
// the CLI's commands. top are the binary's other subcommands.
func Complete(words []string, cur string, top []string) []string {
	var cands []string
	switch {
	case len(words) == 0:
		cands = append(cands, top...)
		for _, c := range Commands {
			cands = append(cands, c.Path[0])
		}
	case len(words) == 1 && len(Groups()[words[0]]) > 0 && !strings.HasPrefix(cur, "-"):
		for _, c := range Groups()[words[0]] {
			cands = append(cands, c.Path[1])
		}
	case strings.HasPrefix(cur, "-"):
		for _, c := range Commands {
			if !c.External && len(words) >= len(c.Path) && slices.Equal(words[:len(c.Path)], c.Path) {
				fs := flag.NewFlagSet("", flag.ContinueOnError)
				(&common{}).register(fs)
				c.flags(fs)
				fs.VisitAll(func(f *flag.Flag) { cands = append(cands, "--"+f.Name) })
			}
		}
	}
	var out []string
	for _, c := range cands {
		if strings.HasPrefix(c, cur) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// CompletionScript writes the completion script of shell (bash or zsh):
// it asks `tally __complete` for the candidates, so it never goes stale.
func CompletionScript(w io.Writer, shell string) error {
	switch shell {
	case "bash":
		_, err := io.WriteString(w, `# bash completion for tally. Load it with:
#   source <(tally completion bash)
_tally_complete() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local IFS=$'\n'
  COMPREPLY=($(tally __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null))
}
complete -o default -F _tally_complete tally
`)
		return err
	case "zsh":
		_, err := io.WriteString(w, `#compdef tally
# zsh completion for tally. Load it with:
#   source <(tally completion zsh)
_tally() {
  local -a candidates
  candidates=(${(f)"$(tally __complete ${words[2,CURRENT-1]} "${words[CURRENT]}" 2>/dev/null)"})
  compadd -a candidates
}
compdef _tally tally
`)
		return err
	}
	return fmt.Errorf("completion for bash or zsh, not %q", shell)
}
