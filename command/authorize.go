package command

import (
	"context"
	"fmt"

	"github.com/tally-oss/tally/internal/auth"
)

// PermissionError means the caller's token does not allow the command:
// its roles do not include one that may, or the store is not among its
// stores. It names the role and store, never the token.
type PermissionError struct {
	Subject string
	Roles   string
	What    string // "sale commands", "adjustments of N units (…)"
	Store   string // "" when the role is what is missing
	Need    string // the roles that may
}

func (e *PermissionError) Error() string {
	if e.Store != "" {
		return fmt.Sprintf("%s (roles %s) may not send %s at store %q: the token does not grant that store", e.Subject, e.Roles, e.What, e.Store)
	}
	return fmt.Sprintf("%s (roles %s) may not send %s: that needs the role %s", e.Subject, e.Roles, e.What, e.Need)
}

// mayDo is who may do each kind, admin aside (admin may do everything).
var mayDo = map[Kind][]auth.Role{
	KindSale:               {auth.RolePOS, auth.RoleEcommerce},
	KindReturn:             {auth.RolePOS},
	KindReserve:            {auth.RolePOS, auth.RoleEcommerce},
	KindCommitReservation:  {auth.RolePOS, auth.RoleEcommerce},
	KindReleaseReservation: {auth.RolePOS, auth.RoleEcommerce},
	KindReceipt:            {auth.RoleWarehouse},
	KindTransfer:           {auth.RoleWarehouse},
	KindAdjustment:         {auth.RoleWarehouse},
	KindCountStock:         {auth.RoleWarehouse},
	KindSetReorderPolicy:   {}, // admin only
}

// authorize checks cmd against the call's principal, and records the
// principal's subject as the command's actor; a call without one
// (authentication off) may do anything. maxAdjustment bounds the units of
// an adjustment a non-admin may make (0: no bound).
func authorize(ctx context.Context, cmd *Command, maxAdjustment int64) error {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return nil
	}
	cmd.Actor, cmd.Roles = p.Subject, p.RoleNames()
	if p.Has(auth.RoleAdmin) {
		return nil
	}
	if !p.AllStores() {
		cmd.Granted = p.Stores
		if cmd.Granted == nil {
			cmd.Granted = []string{} // none: not nil, which grants every store
		}
	}
	name := registry[cmd.Kind].name + " commands"
	deny := func(what, store string, need ...auth.Role) error {
		e := &PermissionError{Subject: p.Subject, Roles: p.RoleNames(), What: what, Store: store, Need: "admin"}
		for _, r := range need {
			e.Need = string(r) + " or " + e.Need
		}
		return e
	}
	roles := mayDo[cmd.Kind]
	if !p.Has(roles...) {
		return deny(name, "", roles...)
	}
	if cmd.Kind == KindAdjustment && maxAdjustment > 0 && (cmd.Quantity > maxAdjustment || -cmd.Quantity > maxAdjustment) {
		return deny(fmt.Sprintf("adjustments of %d units (more than --max-adjustment %d)", cmd.Quantity, maxAdjustment), "")
	}
	// A count moves on_hand by its variance, known when it is decided
	// (countKind.decide): bounded like an adjustment.
	cmd.MaxChange = maxAdjustment
	// A transfer needs its source store; commit and release name no
	// store: their reservation's is checked against cmd.Granted when they
	// are decided (reservationEnd.decide).
	if cmd.Store != "" && !p.InStore(cmd.Store) {
		return deny(name, cmd.Store)
	}
	return nil
}
