package worker

import (
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/steps"
)

// maxMessageBytes is the largest message the worker sends on its stream,
// and the coordinator accepts.
const maxMessageBytes = 64 << 20

// sendable makes a result safe to send: protobuf refuses strings that are
// not valid UTF-8, and gRPC messages above the limit; either would end the
// whole stream (and take every task of this worker with it). Record data
// reaches strings in error messages and aggregate keys; those keep their
// exact bytes in key_bytes. A result too large to send becomes a fatal
// error that says what to change.
func sendable(res *sluicev1.TaskResult) *sluicev1.TaskResult {
	defer func() {
		if n := proto.Size(res); n > maxMessageBytes {
			*res = sluicev1.TaskResult{
				Key: res.GetKey(), Range: res.GetRange(), SpecVersion: res.GetSpecVersion(), Duration: res.GetDuration(), Fatal: true,
				Error: fmt.Sprintf("the task's output is %d MiB, above the %d MiB a worker can send: aggregate it, write it to a Kafka sink, or lower limits.max_records_per_batch or limits.max_task_output_bytes",
					n>>20, maxMessageBytes>>20),
			}
		}
	}()
	res.Error = steps.SafeText(res.Error, steps.MaxErrorBytes)
	for _, ka := range res.Aggregates {
		if !utf8.ValidString(ka.Key) { // steps makes them valid; this is the last line
			ka.KeyBytes = []byte(ka.Key)
			ka.Key = steps.SafeText(ka.Key, 0)
		}
	}
	for _, r := range res.Records {
		r.Topic = steps.SafeText(r.Topic, 0)
		r.SinkTopic = steps.SafeText(r.SinkTopic, 0)
		for _, h := range r.Headers {
			h.Key = steps.SafeText(h.Key, 0)
		}
	}
	return res
}
