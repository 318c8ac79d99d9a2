package command

import "github.com/tally-oss/tally/command/domain"

// replay answers a command whose (sku, command_id) already has result r:
// the original result, marked replayed, when c asks for the same thing, and
// a *CommandIDReusedError when it asks for something else.
func (r *Result) replay(c *Command) (*Result, error) {
	if r.fingerprint != (domain.Fingerprint{}) && r.fingerprint != domain.FingerprintOf(c) {
		return nil, &CommandIDReusedError{SKU: c.SKU, CommandID: c.ID}
	}
	return r.replayed(), nil
}
