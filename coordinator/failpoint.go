package coordinator

import (
	"github.com/sluice-stream/sluice/failpoint"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Failpoints builds Hooks that crash (kill) or freeze (stop) this process at
// a point of the batch lifecycle: before-plan-log, after-plan-logged,
// after-dispatch, before-commit, after-commit, and before-update-commit:
// inside a batch's update stream transaction, after its etcd commit (see
// failpoint.Parse).
func Failpoints(spec string) (Hooks, error) {
	fps, err := failpoint.Parse(spec, "before-plan-log", "after-plan-logged", "after-dispatch", "before-commit", "after-commit", "before-update-commit")
	if err != nil {
		return Hooks{}, err
	}
	hit := func(name string) func(*sluicev1.Batch) error {
		if !fps.Armed(name) {
			return nil
		}
		return func(*sluicev1.Batch) error {
			fps.Hit(name)
			return nil
		}
	}
	return Hooks{
		BeforePlanLog:   hit("before-plan-log"),
		AfterPlanLogged: hit("after-plan-logged"),
		AfterDispatch:   hit("after-dispatch"),
		BeforeCommit:    hit("before-commit"),
		AfterCommit:     hit("after-commit"),
		BeforeUpdateCommit: func(int64) {
			fps.Hit("before-update-commit")
		},
	}, nil
}
