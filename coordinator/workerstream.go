package coordinator

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluice-stream/sluice/auth"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// standbyLeaderTimeout bounds a standby's etcd read of the leader's address
// when it turns a worker away. The address only informs (workers try the
// next coordinator either way), and every worker of a failover waits this
// long on a standby cut off from etcd: short.
const standbyLeaderTimeout = 250 * time.Millisecond

// workerServer is the cluster protocol end of the coordinator.
type workerServer struct {
	sluicev1.UnimplementedWorkerServiceServer
	c *Coordinator
}

func (s *workerServer) Connect(stream grpc.BidiStreamingServer[sluicev1.ConnectRequest, sluicev1.ConnectResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	if !s.c.IsLeader() {
		// Naming the leader reads etcd: bounded, so that a standby cut off
		// from etcd turns the worker away at once instead of holding it,
		// and the worker tries the next coordinator.
		lctx, lcancel := context.WithTimeout(ctx, standbyLeaderTimeout)
		leader, _ := s.c.Leader(lctx)
		lcancel()
		return toStatus(fmt.Errorf("%w; leader is %q", ErrNotLeader, leader))
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if reg.GetWorkerId() == "" {
		return status.Error(codes.InvalidArgument, "the first message must be a register with a worker_id")
	}
	if err := checkWorkerProcessors(reg.GetProcessors()); err != nil {
		return status.Errorf(codes.InvalidArgument, "register: processors: %v", err)
	}
	// Under authentication a worker registers under its own name only:
	// nobody else can take its id, and so its tasks and their results.
	if p, ok := auth.FromContext(ctx); ok && (p.Role != auth.RoleWorker || p.Name != reg.GetWorkerId()) {
		s.c.logger.Warn("refused a worker registering under another name", "principal", p.Name, "role", p.Role, "worker_id", reg.GetWorkerId())
		return status.Errorf(codes.PermissionDenied, "%s (role %s) may not register as worker_id %q: a worker registers under its own name",
			p.Name, p.Role, reg.GetWorkerId())
	}
	w := s.c.dispatcher.register(reg)
	defer s.c.dispatcher.unregister(w)
	if err := stream.Send(&sluicev1.ConnectResponse{Kind: &sluicev1.ConnectResponse_Registered{
		Registered: &sluicev1.Registered{HeartbeatInterval: durationpb.New(s.c.cfg.HeartbeatInterval)},
	}}); err != nil {
		return err
	}

	// The receive loop runs beside the sender below; it ends with the stream.
	recvErr := make(chan error, 1)
	alive := make(chan struct{}, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			w.lastSeen.Store(time.Now().UnixNano())
			select {
			case alive <- struct{}{}:
			default:
			}
			if res := msg.GetResult(); res != nil {
				s.c.dispatcher.deliver(w, res)
			}
		}
	}()

	timeout := time.NewTimer(s.c.cfg.HeartbeatTimeout)
	defer timeout.Stop()
	ping := time.NewTicker(s.c.cfg.HeartbeatInterval)
	defer ping.Stop()
	pingMsg := &sluicev1.ConnectResponse{Kind: &sluicev1.ConnectResponse_Ping{Ping: &sluicev1.Ping{}}}
	for {
		select {
		case <-ping.C:
			if err := stream.Send(pingMsg); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		case <-w.done:
			return status.Error(codes.Aborted, "worker stream replaced or coordinator stepped down")
		case err := <-recvErr:
			return err
		case <-alive:
			if !timeout.Stop() {
				select {
				case <-timeout.C:
				default:
				}
			}
			timeout.Reset(s.c.cfg.HeartbeatTimeout)
		case <-timeout.C:
			s.c.logger.Warn("worker missed heartbeats, dropping it", "worker_id", w.id, "timeout", s.c.cfg.HeartbeatTimeout)
			return status.Error(codes.DeadlineExceeded, "no heartbeat within the timeout")
		case msg := <-w.send:
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}
