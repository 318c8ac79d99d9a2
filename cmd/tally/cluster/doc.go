// Package cluster holds the multi-process tests of Tally: `tally kafka`
// and several command instances as separate OS processes, killed (SIGKILL)
// and paused (SIGSTOP) under load, audited from outside. It has no code of
// its own.
package cluster
