package query

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/tally-oss/tally/internal/auth"
)

// Reads are for every role, within the stores its token grants: a call
// naming a store the token does not grant, or naming none when the token
// is scoped to stores, is PERMISSION_DENIED naming the store; a watch of
// all stores by a scoped token watches its stores (WatchLowStock).

// Authorize is the interceptor that checks the stores of every unary read
// against the call's principal (set by auth.Interceptor, which must run
// first). Calls without a principal (authentication off) pass.
func Authorize() connect.Interceptor { return authorizer{} }

type authorizer struct{}

func (authorizer) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if p, ok := auth.FromContext(ctx); ok && !p.AllStores() {
			if m, ok := req.Any().(proto.Message); ok {
				if err := storesAllowed(p, m.ProtoReflect()); err != nil {
					return nil, err
				}
			}
		}
		return next(ctx, req)
	}
}

func (authorizer) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (authorizer) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// storesAllowed checks the store_id of m and of the messages in its
// repeated fields (BatchGetStock's keys).
func storesAllowed(p *auth.Principal, m protoreflect.Message) error {
	fields := m.Descriptor().Fields()
	if fd := fields.ByName("store_id"); fd != nil && fd.Kind() == protoreflect.StringKind {
		if err := storeAllowed(p, m.Get(fd).String()); err != nil {
			return err
		}
	}
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsList() && fd.Kind() == protoreflect.MessageKind {
			l := m.Get(fd).List()
			for j := range l.Len() {
				if err := storesAllowed(p, l.Get(j).Message()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func storeAllowed(p *auth.Principal, store string) error {
	if store == "" {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s (roles %s) reads the stores %s only: name one of them in store_id", p.Subject, p.RoleNames(), strings.Join(p.Stores, ", ")))
	}
	if !p.InStore(store) {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s (roles %s) may not read store %q: the token does not grant that store", p.Subject, p.RoleNames(), store))
	}
	return nil
}

// watchStores narrows a watch's stores to the principal's: all of them
// when the watch names none; an error for a store not granted.
func watchStores(ctx context.Context, stores []string) ([]string, error) {
	return scopedStores(ctx, stores, "watch")
}

// scopedStores returns the stores a call naming stores (none: all) may
// read: all of them for a token of every store, its own for a token scoped
// to stores (refused when it names another, or when the token has none).
func scopedStores(ctx context.Context, stores []string, what string) ([]string, error) {
	p, ok := auth.FromContext(ctx)
	if !ok || p.AllStores() {
		return stores, nil
	}
	if len(stores) == 0 {
		if len(p.Stores) == 0 {
			return nil, connect.NewError(connect.CodePermissionDenied, errors.New(p.Subject+" has no store to "+what))
		}
		return p.Stores, nil
	}
	for _, s := range stores {
		if err := storeAllowed(p, s); err != nil {
			return nil, err
		}
	}
	return stores, nil
}
