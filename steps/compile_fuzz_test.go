package steps

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/record"
)

// maxFuzzInputTime is how long one fuzz input may take before the fuzz
// worker is crashed on purpose, so that the engine keeps the input: go test
// -fuzz does not detect hangs itself. It is far above what the cost limit
// allows (some 40ms per evaluation), so only a real hang trips it.
const maxFuzzInputTime = 20 * time.Second

// watchdog panics, crashing the test process, unless the returned stop is
// called within maxFuzzInputTime.
func watchdog(what string) (stop func() bool) {
	start := time.Now()
	return time.AfterFunc(maxFuzzInputTime, func() {
		panic(fmt.Sprintf("%s still running after %v: a hang", what, time.Since(start).Round(time.Second)))
	}).Stop
}

// exprSlots are the places of a JobSpec that hold an expression, with the
// field a compile error names.
var exprSlots = []struct {
	field string
	spec  func(src string) *sluicev1.JobSpec
}{
	{"steps[0].filter", func(src string) *sluicev1.JobSpec { return spec(filter(src)) }},
	{"steps[0].map.key", func(src string) *sluicev1.JobSpec { return spec(mapKV(src, "")) }},
	{"steps[0].map.value", func(src string) *sluicev1.JobSpec { return spec(mapKV("", src)) }},
	{"aggregate.key", func(src string) *sluicev1.JobSpec { return withAgg(spec(), src, "") }},
	{"aggregate.value", func(src string) *sluicev1.JobSpec { return withAgg(spec(), "", src, sum) }},
	{"sink.kafka.topic_expr", func(src string) *sluicev1.JobSpec {
		return kafkaSpec(&sluicev1.KafkaSink{TopicExpr: src})
	}},
	{"sink.kafka.partition_expr", func(src string) *sluicev1.JobSpec {
		return kafkaSpec(&sluicev1.KafkaSink{Topic: "out", PartitionExpr: src})
	}},
	{`sink.kafka.headers["h"]`, func(src string) *sluicev1.JobSpec {
		return kafkaSpec(&sluicev1.KafkaSink{Topic: "out", Headers: map[string]string{"h": src}})
	}},
}

// maxCompileErrorText bounds what a compile error may say beyond its field
// and hint: CEL quotes the source line under each of up to 100 errors.
const maxCompileErrorText = maxIssuesBytes + 512

// Expressions of the tests, the README and the examples.
var exprCorpus = []string{
	"json.ms < 1000", "json.page", "json.ms", "topic", "true", "key", "value_bytes", "json.h",
	"json.ms > 100", "json.ok", "partition % 4", "uint(size(key)) % 4u", "json.p", "json.topic",
	"json.encode(json.a) == string(json.parse('1').orValue(0))",
	"key.lowerAscii().split('-')[0]", "value.substring(1)", "math.greatest(1, 2.5)",
	"regex.extract(value, 'id=([0-9]+)').orValue('')",
	"cel.bind(v, value, v.startsWith('a') || v.endsWith('z'))",
	"json.items.all(x, x.price > 0.0 && x.name.startsWith('a'))",
	"json.items.map(x, x.qty).exists(q, q > 3)",
	"json.tags.distinct().size() == json.tags.size()",
	"sets.intersects(json.a, json.b)",
	"headers.exists(k, k.startsWith('x-'))",
	"value.matches('^a.*b$') || regex.extract(value, 'id=([0-9]+)').hasValue()",
	"lists.range(int(json.n)).exists(i, i > 10)",
	"[1, 2, 3].map(i, i * json.n).size() == 3",
	"base64.encode(key_bytes)", "timestamp.getHours() > 3", "{'a': json.a, 'n': offset}",
	"headers['x-id']", "json.?a.orValue(0) > 1", "double(size(key)) % 3 == 0.0", "size(key) * 1.5 > 0.0",
	"lists.range(100000).all(i, lists.range(100000).all(j, j >= 0))",
	"lists.range(500000).filter(i, i % 7 == 0).size()",
	"json.a.distinct().size() > 1", "lists.range(int(json.n)).all(i, i >= 0)",
	"", " ", "json.", "1 +", "'unterminated", "a.b(", "@", "\x00", "é中😀 == key",
}

// FuzzCompile compiles any expression in any place of a spec: it never
// panics or hangs, an error names the field and is valid UTF-8 of bounded
// size, and an expression that compiles evaluates on records without
// panicking, its errors bounded by the cost limit.
func FuzzCompile(f *testing.F) {
	// Each in one place: the fuzzer moves them (and the committed corpus
	// has more).
	for i, src := range exprCorpus {
		f.Add(src, uint8(i%len(exprSlots)))
	}
	recs := fuzzRecords()
	f.Fuzz(func(t *testing.T, src string, slot uint8) {
		s := exprSlots[int(slot)%len(exprSlots)]
		stop := watchdog(fmt.Sprintf("Compile(%q) at %s", src, s.field))
		defer stop()
		p, err := Compile(s.spec(src))
		if err != nil {
			checkCompileError(t, src, s.field, err)
			return
		}
		r := p.NewRunner()
		for _, rec := range recs {
			err := r.Process(rec)
			checkProcessError(t, src, err)
		}
		checkResult(t, r.Result())
	})
}

func checkCompileError(t *testing.T, src, field string, err error) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Compile(%q) error = %T %v, want *FieldError", src, err, err)
	}
	// An empty expression may be no expression: the error is the parent's.
	if fe.Field != field && !(src == "" && strings.HasPrefix(field, fe.Field)) {
		t.Fatalf("Compile(%q) error names %q, want %q: %v", src, fe.Field, field, err)
	}
	msg := err.Error()
	if utf8.ValidString(src) && !utf8.ValidString(msg) {
		t.Fatalf("Compile(%q) error is not valid UTF-8: %q", src, msg)
	}
	// An expression that is not CEL's is quoted in full; CEL's text is cut.
	var cerr *celError
	if errors.As(err, &cerr) && len(cerr.msg) > maxCompileErrorText {
		t.Fatalf("Compile(%d bytes) error has %d bytes, want at most %d", len(src), len(cerr.msg), maxCompileErrorText)
	}
}

// checkProcessError checks what Process returned for one record.
func checkProcessError(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var re *RecordError
	if !errors.As(err, &re) {
		t.Fatalf("%s: Process error = %T %v, want *RecordError", what, err, err)
	}
	if msg := err.Error(); !utf8.ValidString(msg) || len(msg) > MaxErrorBytes {
		t.Fatalf("%s: Process error of %d bytes, valid UTF-8 %v; want at most %d, valid: %q",
			what, len(msg), utf8.ValidString(msg), MaxErrorBytes, msg)
	}
}

// fuzzRecords are records a compiled expression is run on: JSON, a long
// JSON list, binary, non-UTF-8 and empty.
func fuzzRecords() []*record.Record {
	recs := clickRecords(2)
	recs = append(recs,
		&record.Record{Topic: "clicks", Partition: 1, Offset: 7, Value: []byte(jsonList(200_000)),
			Headers: []record.Header{{Key: "x-id", Value: []byte("42")}}},
		&record.Record{Topic: "clicks", Partition: -1, Offset: -1, Key: []byte("\xff\xfe\x00"), Value: []byte("{\"a\":\"\xc3\"}"),
			Headers:   []record.Header{{Key: "\xff", Value: []byte{0xc0, 0x80}}, {Key: "\xff", Value: nil}},
			Timestamp: time.Unix(1<<40, 0)},
		&record.Record{},
	)
	return recs
}

// A CEL error quotes the source line under each error, up to 100 of them:
// a line of 16 KiB would give megabytes.
func TestCompileErrorTextIsBounded(t *testing.T) {
	for _, src := range []string{strings.Repeat("@", 2000), strings.Repeat("@", 16000), strings.Repeat("a ! ", 4000),
		"size(key) * 1.5 > 0.0" + strings.Repeat(" ", 20000) + "&& @"} {
		_, err := Compile(spec(filter(src)))
		var cerr *celError
		if !errors.As(err, &cerr) {
			t.Fatalf("Compile(%.20q...) error = %v, want a CEL error", src, err)
		}
		if len(cerr.msg) > maxCompileErrorText || !strings.HasPrefix(err.Error(), "steps[0].filter: ERROR: <input>:") {
			t.Errorf("Compile(%d bytes %.20q...) error of %d bytes: %.200q...; want at most %d, starting with the first error",
				len(src), src, len(cerr.msg), cerr.msg, maxCompileErrorText)
		}
	}
	// The hint comes from all of CEL's text, and stays.
	src := strings.Repeat("size(key) * 1.5 > 0.0 && ", 200) + "true"
	if _, err := Compile(spec(filter(src))); err == nil || !strings.Contains(err.Error(), "…\nCEL does not mix int and double") {
		t.Errorf("Compile(%.30q...) error = %.100q...%q, want it cut and the hint after", src, err, err.Error()[max(len(err.Error())-100, 0):])
	}
}
