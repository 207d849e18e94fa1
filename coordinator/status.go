package coordinator

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/kafkasrc"
	"github.com/sluice-stream/sluice/offsetstore"
)

// kafkaStatus is the status of a failed call to a job's Kafka cluster:
// FailedPrecondition when the job's properties must change first (failed
// authentication, a property the client cannot honour), else Unavailable.
func kafkaStatus(what string, err error) error {
	if errors.Is(err, kafkasrc.ErrPermanent) || errors.Is(err, kafkasrc.ErrUnsupportedProperty) {
		return status.Errorf(codes.FailedPrecondition, "%s: %v", what, err)
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

// toStatus is the one place where domain errors become gRPC status codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		st := status.New(codes.InvalidArgument, ve.Error())
		if d, derr := st.WithDetails(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: ve.Field, Description: ve.Reason},
		}}); derr == nil {
			st = d
		}
		return st.Err()
	case errors.Is(err, kafkasrc.ErrRefusedProperty):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, offsetstore.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, offsetstore.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, offsetstore.ErrConflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoState):
		return status.Error(codes.FailedPrecondition, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}
