package main

import (
	"os"
	"strings"
	"syscall"
)

// A worker hands every record from librdkafka to Go through cgo, and Go's
// default cgocheck=1 inspects the pointers of each such call (a debugging
// check: it finds Go pointers to Go memory passed to C, which
// confluent-kafka-go does not do): 5-10% of a worker's CPU on a backlog
// (kafkasrc's BenchmarkRead: 3.2-3.8 s of CPU against 2.8-3.0 s). The
// runtime reads GODEBUG only when the process starts, so `sluice worker`
// and `sluice dev` start again once, in place (same process id), with
// cgocheck=0 added to GODEBUG, unless GODEBUG already sets cgocheck.

// noCgoCheckEnv returns environ with cgocheck=0 added to GODEBUG, and false
// when GODEBUG already sets cgocheck (nothing to do).
func noCgoCheckEnv(environ []string) ([]string, bool) {
	out := make([]string, 0, len(environ)+1)
	godebug := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug = v
			continue
		}
		out = append(out, kv)
	}
	for _, setting := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(setting), "cgocheck=") {
			return environ, false
		}
	}
	if godebug != "" {
		godebug += ","
	}
	return append(out, "GODEBUG="+godebug+"cgocheck=0"), true
}

// readsKafka reports whether the command line runs a worker: `sluice
// worker` or `sluice dev` (flags before the command are not used by either).
func readsKafka(args []string) bool {
	return len(args) > 0 && (args[0] == "worker" || args[0] == "dev")
}

// restartWithoutCgoCheck starts the process again with cgocheck=0 (see
// above) when args run a worker. It returns only when there is nothing to
// do or the restart failed, and then the process goes on as it is.
func restartWithoutCgoCheck(args []string) {
	if !readsKafka(args) {
		return
	}
	env, restart := noCgoCheckEnv(os.Environ())
	if !restart {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env)
}
