package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/tally-oss/tally/internal/auth"
)

func hsVerifier(t *testing.T) (*auth.Verifier, []byte) {
	t.Helper()
	key, created, err := auth.LoadOrCreateKey(filepath.Join(t.TempDir(), "auth", "hs256.key"))
	if err != nil || !created {
		t.Fatal(err, created)
	}
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(t.Context(), auth.Config{KeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	return v, key
}

func TestIssuedTokenVerifiesWithItsRolesAndStores(t *testing.T) {
	v, key := hsVerifier(t)
	tok, err := auth.Issue(key, "till-4", []auth.Role{auth.RolePOS}, []string{"S1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if p.Subject != "till-4" || !p.Has(auth.RolePOS) || p.Has(auth.RoleAdmin) || !p.InStore("S1") || p.InStore("S2") || p.AllStores() {
		t.Fatalf("principal %+v", p)
	}
}

func TestBadTokensAreRefusedSayingWhyWithoutTheToken(t *testing.T) {
	v, key := hsVerifier(t)
	_, other := hsVerifier(t)
	expired, _ := auth.Issue(key, "a", []auth.Role{auth.RolePOS}, []string{"S1"}, -time.Hour)
	foreign, _ := auth.Issue(other, "a", []auth.Role{auth.RolePOS}, []string{"S1"}, time.Hour)
	noRoles, _ := jwt.Sign(must(jwt.NewBuilder().Subject("a").Expiration(time.Now().Add(time.Hour)).Build()), jwt.WithKey(jwa.HS256(), key))
	badRole, _ := jwt.Sign(must(jwt.NewBuilder().Subject("a").Expiration(time.Now().Add(time.Hour)).Claim("roles", []string{"root"}).Build()), jwt.WithKey(jwa.HS256(), key))
	noExp, _ := jwt.Sign(must(jwt.NewBuilder().Subject("a").Claim("roles", []string{"pos"}).Build()), jwt.WithKey(jwa.HS256(), key))
	for name, c := range map[string]struct{ tok, want string }{
		"expired":           {expired, "expired"},
		"another key":       {foreign, "signature"},
		"garbage":           {"not.a.jwt", "not a valid JWT"},
		"no roles":          {string(noRoles), "roles"},
		"an unknown role":   {string(badRole), "unknown role"},
		"without an expiry": {string(noExp), "no expiry"},
	} {
		_, err := v.Verify(c.tok)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
		if err != nil && len(c.tok) > 20 && strings.Contains(err.Error(), c.tok[len(c.tok)-20:]) {
			t.Errorf("%s: the error repeats the token", name)
		}
	}
}

func TestTokensSignedByAJWKSKeyVerify(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.Import(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.AlgorithmKey, jwa.ES256())
	_ = pub.Set(jwk.KeyIDKey, "k1")
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	b, _ := json.Marshal(set)
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(t.Context(), auth.Config{JWKSFile: path, Audience: "tally"})
	if err != nil {
		t.Fatal(err)
	}
	sk, _ := jwk.Import(priv)
	_ = sk.Set(jwk.KeyIDKey, "k1")
	tok := must(jwt.NewBuilder().Subject("bi").Audience([]string{"tally"}).Expiration(time.Now().Add(time.Hour)).Claim("roles", []string{"analyst"}).Build())
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), sk))
	if err != nil {
		t.Fatal(err)
	}
	p, err := v.Verify(string(signed))
	if err != nil || !p.Has(auth.RoleAnalyst) {
		t.Fatalf("%+v %v", p, err)
	}
	other := must(jwt.NewBuilder().Subject("bi").Audience([]string{"else"}).Expiration(time.Now().Add(time.Hour)).Claim("roles", []string{"analyst"}).Build())
	signed, _ = jwt.Sign(other, jwt.WithKey(jwa.ES256(), sk))
	if _, err := v.Verify(string(signed)); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("another audience: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
