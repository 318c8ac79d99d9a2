// Package auth authenticates API calls: bearer tokens that are signed JWTs,
// verified by github.com/lestrrat-go/jwx (HS256 with a secret file, or
// RS256/ES256 and the rest with keys from a JWKS file or an OIDC issuer's
// published keys), and the Principal they name: a subject, roles and
// stores. One Connect interceptor (Interceptor) checks every call of the
// services it wraps (Connect, gRPC and gRPC-Web alike); what a principal
// may do is decided by the services (Principal.Can*), since only they know
// a call's store.
//
// Tokens are never logged and never repeated in an error.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Role is what a principal is for.
type Role string

// The roles. What each may do is in the services' checks and in README.
const (
	RolePOS       Role = "pos"       // sales, returns, reservations and reads, for its stores
	RoleEcommerce Role = "ecommerce" // reservations, sales and reads, for the stores it is granted
	RoleWarehouse Role = "warehouse" // receipts, transfers (from its stores), adjustments and counts, and reads
	RoleAnalyst   Role = "analyst"   // reads only
	RoleAdmin     Role = "admin"     // everything: reorder policies, adjustments above the limit, every store
)

// Roles are the roles a token may carry.
var Roles = []Role{RolePOS, RoleEcommerce, RoleWarehouse, RoleAnalyst, RoleAdmin}

// AllStores in a token's stores claim grants every store.
const AllStores = "*"

// Claim names.
const (
	ClaimRoles  = "roles"
	ClaimStores = "stores"
)

// Principal is who a verified token says is calling.
type Principal struct {
	Subject string
	Roles   []Role
	// Stores are the stores granted; AllStores grants every one.
	Stores []string
}

// Has reports whether p has one of roles.
func (p *Principal) Has(roles ...Role) bool {
	for _, r := range roles {
		if slices.Contains(p.Roles, r) {
			return true
		}
	}
	return false
}

// AllStores reports whether p may act on every store (an admin, or a
// token granting "*").
func (p *Principal) AllStores() bool {
	return p.Has(RoleAdmin) || slices.Contains(p.Stores, AllStores)
}

// InStore reports whether p may act on store.
func (p *Principal) InStore(store string) bool {
	return p.AllStores() || slices.Contains(p.Stores, store)
}

// RoleNames is p's roles for messages.
func (p *Principal) RoleNames() string {
	names := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ",")
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the call's principal; ok is false when the call was
// not authenticated (authentication off).
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok
}

// Config says where the keys that sign tokens come from; exactly one of
// KeyFile, JWKSFile and Issuer.
type Config struct {
	// KeyFile holds an HS256 secret (at least 32 bytes).
	KeyFile string
	// JWKSFile holds the public keys (a JWKS document), each with its alg.
	JWKSFile string
	// Issuer is an OIDC issuer URL: its keys are fetched from the jwks_uri
	// of its /.well-known/openid-configuration, again every RefreshEvery;
	// the iss claim must match it.
	Issuer string
	// Audience, when set, must be in the aud claim.
	Audience string
	// RefreshEvery is how often an issuer's keys are fetched. Default 10m.
	RefreshEvery time.Duration
	// HTTP fetches an issuer's keys. Default http.DefaultClient with a 10 s timeout.
	HTTP *http.Client
}

// Verifier verifies tokens.
type Verifier struct {
	cfg  Config
	hmac []byte
	mu   sync.RWMutex
	keys jwk.Set
}

// MinKeyBytes is the shortest HS256 secret accepted.
const MinKeyBytes = 32

// NewVerifier loads the keys cfg names. With an issuer it fetches them now
// and again every RefreshEvery until ctx ends.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	n := 0
	for _, s := range []string{cfg.KeyFile, cfg.JWKSFile, cfg.Issuer} {
		if s != "" {
			n++
		}
	}
	if n != 1 {
		return nil, errors.New("auth: exactly one of a key file, a JWKS file or an issuer")
	}
	if cfg.RefreshEvery <= 0 {
		cfg.RefreshEvery = 10 * time.Minute
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	v := &Verifier{cfg: cfg}
	switch {
	case cfg.KeyFile != "":
		key, err := os.ReadFile(cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth: read the signing key: %w", err)
		}
		key = []byte(strings.TrimSpace(string(key)))
		if len(key) < MinKeyBytes {
			return nil, fmt.Errorf("auth: the key in %s is %d bytes, at least %d are needed", cfg.KeyFile, len(key), MinKeyBytes)
		}
		v.hmac = key
	case cfg.JWKSFile != "":
		set, err := jwk.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth: read the JWKS %s: %w", cfg.JWKSFile, err)
		}
		v.keys = set
	default:
		if err := v.fetch(ctx); err != nil {
			return nil, err
		}
		go v.refresh(ctx)
	}
	return v, nil
}

// fetch reads the issuer's keys.
func (v *Verifier) fetch(ctx context.Context) error {
	u := strings.TrimSuffix(v.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("auth: issuer %s: %w", v.cfg.Issuer, err)
	}
	resp, err := v.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("auth: issuer %s: %w", v.cfg.Issuer, err)
	}
	defer resp.Body.Close()
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("auth: issuer %s: %s answered %s", v.cfg.Issuer, u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || doc.JWKSURI == "" {
		return fmt.Errorf("auth: issuer %s: no jwks_uri in its openid-configuration (%v)", v.cfg.Issuer, err)
	}
	set, err := jwk.Fetch(ctx, doc.JWKSURI, jwk.WithHTTPClient(v.cfg.HTTP))
	if err != nil {
		return fmt.Errorf("auth: issuer %s: fetch %s: %w", v.cfg.Issuer, doc.JWKSURI, err)
	}
	v.mu.Lock()
	v.keys = set
	v.mu.Unlock()
	return nil
}

func (v *Verifier) refresh(ctx context.Context) {
	t := time.NewTicker(v.cfg.RefreshEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = v.fetch(ctx) // keep the keys we have; the next tick tries again
		}
	}
}

// ErrUnauthenticated is every verification failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// Verify checks token's signature, expiry, issuer and audience, and
// returns its principal. Errors say what is wrong, never the token.
func (v *Verifier) Verify(token string) (*Principal, error) {
	opts := []jwt.ParseOption{jwt.WithValidate(true), jwt.WithAcceptableSkew(30 * time.Second)}
	if v.hmac != nil {
		opts = append(opts, jwt.WithKey(jwa.HS256(), v.hmac))
	} else {
		v.mu.RLock()
		keys := v.keys
		v.mu.RUnlock()
		opts = append(opts, jwt.WithKeySet(keys, jws.WithInferAlgorithmFromKey(true), jws.WithRequireKid(false)))
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	tok, err := jwt.Parse([]byte(token), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnauthenticated, why(err))
	}
	if _, ok := tok.Expiration(); !ok {
		return nil, fmt.Errorf("%w: the token has no expiry (exp)", ErrUnauthenticated)
	}
	p := &Principal{}
	p.Subject, _ = tok.Subject()
	if p.Subject == "" {
		return nil, fmt.Errorf("%w: the token has no subject (sub)", ErrUnauthenticated)
	}
	roles, stores := stringsClaim(tok, ClaimRoles), stringsClaim(tok, ClaimStores)
	if len(roles) == 0 {
		return nil, fmt.Errorf("%w: the token has no %q claim (a list of roles)", ErrUnauthenticated, ClaimRoles)
	}
	for _, r := range roles {
		if !slices.Contains(Roles, Role(r)) {
			return nil, fmt.Errorf("%w: unknown role %q in the token", ErrUnauthenticated, r)
		}
		p.Roles = append(p.Roles, Role(r))
	}
	p.Stores = stores // none: no store (an analyst or admin may need none)
	return p, nil
}

// stringsClaim is a claim that is a list of strings (or one string).
func stringsClaim(tok jwt.Token, name string) []string {
	var raw any
	if err := tok.Get(name, &raw); err != nil {
		return nil
	}
	switch v := raw.(type) {
	case string:
		return []string{v}
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil
			}
			out = append(out, s)
		}
		return out
	}
	return nil
}

// why is a verification error in words that say what to fix, without the
// token.
func why(err error) string {
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return "the token has expired"
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return "the token is not valid yet"
	case errors.Is(err, jwt.InvalidIssuerError()):
		return "the token's issuer is not the one this server trusts"
	case errors.Is(err, jwt.InvalidAudienceError()):
		return "the token is not for this audience"
	}
	if strings.Contains(err.Error(), "verif") || strings.Contains(err.Error(), "signature") {
		return "the token's signature does not verify with this server's keys"
	}
	return "the token is not a valid JWT"
}

// Issue mints an HS256 token with key.
func Issue(key []byte, subject string, roles []Role, stores []string, ttl time.Duration) (string, error) {
	names := make([]string, len(roles))
	for i, r := range roles {
		if !slices.Contains(Roles, r) {
			return "", fmt.Errorf("unknown role %q (one of pos, ecommerce, warehouse, analyst, admin)", r)
		}
		names[i] = string(r)
	}
	now := time.Now()
	b := jwt.NewBuilder().Subject(subject).IssuedAt(now).Expiration(now.Add(ttl)).Claim(ClaimRoles, names)
	if len(stores) > 0 {
		b = b.Claim(ClaimStores, stores)
	}
	tok, err := b.Build()
	if err != nil {
		return "", err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256(), key))
	return string(signed), err
}

// LoadOrCreateKey returns the HS256 secret in path, creating a random one
// (mode 0600) when there is none: the development default of `tally serve`.
func LoadOrCreateKey(path string) ([]byte, bool, error) {
	if b, err := os.ReadFile(path); err == nil {
		return []byte(strings.TrimSpace(string(b))), false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, false, err
	}
	key := []byte(fmt.Sprintf("%x", raw))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, err
	}
	if err := os.WriteFile(path, append(key, '\n'), 0o600); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// Interceptor authenticates every call of the handlers it wraps: a call
// without a valid bearer token is answered UNAUTHENTICATED, saying why.
func Interceptor(v *Verifier) connect.Interceptor { return interceptor{v} }

type interceptor struct{ v *Verifier }

func (i interceptor) authenticate(ctx context.Context, h http.Header) (context.Context, error) {
	p, err := i.v.VerifyHeader(h)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, err)
	}
	return WithPrincipal(ctx, p), nil
}

// VerifyHeader verifies the bearer token of a request's Authorization
// header.
func (v *Verifier) VerifyHeader(h http.Header) (*Principal, error) {
	authz := h.Get("Authorization")
	if authz == "" {
		return nil, errors.New("no bearer token: send the header Authorization: Bearer <token>")
	}
	scheme, token, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return nil, errors.New("the Authorization header is not \"Bearer <token>\"")
	}
	return v.Verify(strings.TrimSpace(token))
}

func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, err := i.authenticate(ctx, req.Header())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.authenticate(ctx, conn.RequestHeader())
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
