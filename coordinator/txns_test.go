package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/kafkasrc"
)

// TestKafkaStatus: txn list and txn abort say FailedPrecondition when the
// job's properties must change, Unavailable when Kafka may answer later.
func TestKafkaStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("describe topics [in]: SASL_AUTHENTICATION_FAILED: %w", kafkasrc.ErrPermanent), codes.FailedPrecondition},
		{fmt.Errorf("list transactions: property %q: %w", "sasl.mechanism", kafkasrc.ErrUnsupportedProperty), codes.FailedPrecondition},
		{errors.New("dial tcp 127.0.0.1:9092: connection refused"), codes.Unavailable},
	} {
		st := status.Convert(kafkaStatus("ask Kafka for the transactions", tc.err))
		if st.Code() != tc.want || !strings.HasPrefix(st.Message(), "ask Kafka for the transactions: "+tc.err.Error()) {
			t.Errorf("kafkaStatus(%v) = %v %q, want %v with the error", tc.err, st.Code(), st.Message(), tc.want)
		}
	}
}
