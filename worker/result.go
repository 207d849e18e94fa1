package worker

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// maxMessageBytes is the largest message the worker sends on its stream,
// and the coordinator accepts.
const maxMessageBytes = 64 << 20

// maxErrorLen bounds an error message sent to the coordinator; the job's
// message and logs repeat it.
const maxErrorLen = 2048

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
				Error: fmt.Sprintf("the task's output is %d MiB, above the %d MiB a worker can send: aggregate it, write it to a Kafka sink, or lower limits.maxRecordsPerBatch",
					n>>20, maxMessageBytes>>20),
			}
		}
	}()
	res.Error = validString(res.Error)
	if len(res.Error) > maxErrorLen {
		res.Error = strings.ToValidUTF8(res.Error[:maxErrorLen], "") + "…"
	}
	for _, ka := range res.Aggregates {
		if !utf8.ValidString(ka.Key) {
			ka.KeyBytes = []byte(ka.Key)
			ka.Key = escapeInvalid(ka.Key)
		}
	}
	for _, r := range res.Records {
		r.Topic = validString(r.Topic)
		r.SinkTopic = validString(r.SinkTopic)
		for _, h := range r.Headers {
			h.Key = validString(h.Key)
		}
	}
	return res
}

func validString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// escapeInvalid renders s with each byte that is not part of valid UTF-8 as \xNN.
func escapeInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, "\\x%02x", s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
