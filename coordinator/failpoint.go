package coordinator

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Failpoints builds Hooks that crash or freeze this process at a point of
// the batch lifecycle, for tests that kill real processes at exact moments.
// spec is a comma-separated list of point[:n[:action]]: the action happens
// the n-th time (default 1) the point is reached. Points: before-plan-log,
// after-plan-logged, after-dispatch, before-commit, after-commit. Actions:
// kill (SIGKILL, as kill -9; default) and stop (SIGSTOP: the process freezes
// until SIGCONT, like a long GC pause or a partition).
func Failpoints(spec string) (Hooks, error) {
	var h Hooks
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		parts := strings.Split(item, ":")
		n, action := int64(1), "kill"
		if len(parts) > 1 {
			v, err := strconv.ParseInt(parts[1], 10, 64)
			if err != nil || v < 1 {
				return h, fmt.Errorf("failpoint %q: count must be a positive number", item)
			}
			n = v
		}
		if len(parts) > 2 {
			action = parts[2]
		}
		var sig syscall.Signal
		switch action {
		case "kill":
			sig = syscall.SIGKILL
		case "stop":
			sig = syscall.SIGSTOP
		default:
			return h, fmt.Errorf("failpoint %q: action must be kill or stop", item)
		}
		var seen atomic.Int64
		fire := func(*sluicev1.Batch) error {
			if seen.Add(1) == n {
				fmt.Fprintf(os.Stderr, "failpoint %s reached: sending %s to myself\n", item, sig)
				_ = syscall.Kill(os.Getpid(), sig)
			}
			return nil
		}
		switch parts[0] {
		case "before-plan-log":
			h.BeforePlanLog = fire
		case "after-plan-logged":
			h.AfterPlanLogged = fire
		case "after-dispatch":
			h.AfterDispatch = fire
		case "before-commit":
			h.BeforeCommit = fire
		case "after-commit":
			h.AfterCommit = fire
		default:
			return h, fmt.Errorf("failpoint %q: unknown point %q", item, parts[0])
		}
	}
	return h, nil
}
