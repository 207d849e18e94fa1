package auth

import (
	"errors"
	"fmt"
	"slices"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// ErrPermissionDenied is returned for a principal whose role may not call a
// method.
var ErrPermissionDenied = errors.New("permission denied")

var (
	admins  = []Role{RoleAdmin}
	viewers = []Role{RoleViewer, RoleAdmin}
	workers = []Role{RoleWorker}
)

// methodRoles is the one table of who may call what, by full method name.
// A method missing from it is denied to everyone.
var methodRoles = map[string][]Role{
	sluicev1.JobService_SubmitJob_FullMethodName:         admins, // update too
	sluicev1.JobService_StopJob_FullMethodName:           admins,
	sluicev1.JobService_ResumeJob_FullMethodName:         admins,
	sluicev1.JobService_ResetOffsets_FullMethodName:      admins,
	sluicev1.JobService_DeleteJob_FullMethodName:         admins,
	sluicev1.JobService_AbortTransactions_FullMethodName: admins,

	sluicev1.JobService_GetJob_FullMethodName:           viewers,
	sluicev1.JobService_ListJobs_FullMethodName:         viewers,
	sluicev1.JobService_ListBatches_FullMethodName:      viewers,
	sluicev1.JobService_GetBatch_FullMethodName:         viewers,
	sluicev1.JobService_WatchBatches_FullMethodName:     viewers,
	sluicev1.JobService_GetResults_FullMethodName:       viewers,
	sluicev1.JobService_GetOffsets_FullMethodName:       viewers,
	sluicev1.JobService_GetState_FullMethodName:         viewers,
	sluicev1.JobService_ListTransactions_FullMethodName: viewers,

	sluicev1.WorkerService_Connect_FullMethodName: workers,
}

// openMethods need no credentials: load balancers probe health, and
// reflection only describes the API (grpcurl needs it).
var openMethods = map[string]bool{
	"/grpc.health.v1.Health/Check":                                   true,
	"/grpc.health.v1.Health/Watch":                                   true,
	"/grpc.health.v1.Health/List":                                    true,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
}

// Open reports whether method is served without credentials.
func Open(method string) bool { return openMethods[method] }

// Authorize says whether p may call method.
func Authorize(p Principal, method string) error {
	roles, ok := methodRoles[method]
	if !ok {
		return fmt.Errorf("%w: %s is not open to any role", ErrPermissionDenied, method)
	}
	if !slices.Contains(roles, p.Role) {
		return fmt.Errorf("%w: %s (role %q) may not call %s, which needs role %s",
			ErrPermissionDenied, p.Name, p.Role, method, roleList(roles))
	}
	return nil
}

func roleList(roles []Role) string {
	s := string(roles[0])
	for _, r := range roles[1:] {
		s += " or " + string(r)
	}
	return s
}
