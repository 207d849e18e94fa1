package auth

import (
	"errors"
	"testing"

	"google.golang.org/grpc"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestAuthorize(t *testing.T) {
	admin := Principal{Name: "alice", Role: RoleAdmin}
	viewer := Principal{Name: "bob", Role: RoleViewer}
	worker := Principal{Name: "w1", Role: RoleWorker}
	tests := []struct {
		method string
		p      Principal
		ok     bool
	}{
		{sluicev1.JobService_SubmitJob_FullMethodName, admin, true},
		{sluicev1.JobService_SubmitJob_FullMethodName, viewer, false},
		{sluicev1.JobService_SubmitJob_FullMethodName, worker, false},
		{sluicev1.JobService_DeleteJob_FullMethodName, viewer, false},
		{sluicev1.JobService_AbortTransactions_FullMethodName, viewer, false},
		{sluicev1.JobService_AbortTransactions_FullMethodName, admin, true},
		{sluicev1.JobService_ListJobs_FullMethodName, viewer, true},
		{sluicev1.JobService_ListJobs_FullMethodName, admin, true},
		{sluicev1.JobService_ListJobs_FullMethodName, worker, false},
		{sluicev1.JobService_ListTransactions_FullMethodName, viewer, true},
		{sluicev1.JobService_WatchBatches_FullMethodName, viewer, true},
		{sluicev1.WorkerService_Connect_FullMethodName, worker, true},
		{sluicev1.WorkerService_Connect_FullMethodName, admin, false},
		{sluicev1.WorkerService_Connect_FullMethodName, viewer, false},
		{"/sluice.v1.JobService/NotYetInTheTable", admin, false},
		{"/grpc.health.v1.Health/Check", admin, false}, // open, not authorized
	}
	for _, tc := range tests {
		err := Authorize(tc.p, tc.method)
		if (err == nil) != tc.ok {
			t.Errorf("Authorize(%s, %s) = %v, want ok %v", tc.p.Role, tc.method, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrPermissionDenied) {
			t.Errorf("Authorize(%s, %s) = %v, want ErrPermissionDenied", tc.p.Role, tc.method, err)
		}
	}
}

// TestEveryMethodHasRoles keeps the table complete: a new RPC must be given
// its roles (it is denied to everyone until then).
func TestEveryMethodHasRoles(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{sluicev1.JobService_ServiceDesc, sluicev1.WorkerService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			if _, ok := methodRoles[full]; !ok {
				t.Errorf("%s has no roles in methodRoles", full)
			}
		}
	}
	if len(methodRoles) != len(sluicev1.JobService_ServiceDesc.Methods)+len(sluicev1.JobService_ServiceDesc.Streams)+1 {
		t.Errorf("methodRoles has %d methods, the services %d", len(methodRoles), len(sluicev1.JobService_ServiceDesc.Methods)+len(sluicev1.JobService_ServiceDesc.Streams)+1)
	}
}

func TestParseRole(t *testing.T) {
	for in, ok := range map[string]bool{"admin": true, "viewer": true, "worker": true, "Admin": false, "": false, "root": false} {
		if _, err := ParseRole(in); (err == nil) != ok {
			t.Errorf("ParseRole(%q) = %v, want ok %v", in, err, ok)
		}
	}
}
