package jobspec

import (
	"fmt"
	"math/rand"
	"regexp"
	"strconv"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func spec(name, prefix string) *sluicev1.JobSpec {
	return &sluicev1.JobSpec{Name: name, Sink: &sluicev1.Sink{Kind: &sluicev1.Sink_Kafka{Kafka: &sluicev1.KafkaSink{TransactionalIdPrefix: prefix}}}}
}

const inc1, inc2 = "0123456789abcdef", "fedcba9876543210"

func TestTransactionalID(t *testing.T) {
	for _, tc := range []struct {
		job, prefix, incarnation, topic string
		partition                       int32
		want                            string
	}{
		{"orders", "", inc1, "in", 3, "sluice:orders:0123456789abcdef:in:3"},
		{"orders", "etl", inc1, "in.v2", 0, "etl:orders:0123456789abcdef:in.v2:0"},
		{"a", "", inc1, "b-c", 0, "sluice:a:0123456789abcdef:b-c:0"},
		{"a-b", "", inc1, "c", 0, "sluice:a-b:0123456789abcdef:c:0"},
		// Jobs created before incarnations keep their ids.
		{"orders", "", "", "in", 3, "sluice-orders-in-3"},
		{"orders", "etl", "", "in", 12, "etl-orders-in-12"},
	} {
		s := spec(tc.job, tc.prefix)
		got := TransactionalID(s, tc.incarnation, tc.topic, tc.partition)
		if got != tc.want {
			t.Errorf("TransactionalID(job %q, prefix %q, incarnation %q, %s/%d) = %q, want %q", tc.job, tc.prefix, tc.incarnation, tc.topic, tc.partition, got, tc.want)
		}
		if p := TransactionalIDPrefix(s, tc.incarnation); !strings.HasPrefix(got, p) {
			t.Errorf("TransactionalIDPrefix(job %q, incarnation %q) = %q is not a prefix of %q", tc.job, tc.incarnation, p, got)
		}
	}
}

// TestTransactionalIDsDoNotCollide: the ids that collided before
// incarnations (job a on topic b-c and job a-b on topic c) differ; two
// incarnations of a job differ; and no prefix chosen to look like another
// job's ids produces one of them.
func TestTransactionalIDsDoNotCollide(t *testing.T) {
	legacyA := TransactionalID(spec("a", ""), "", "b-c", 0)
	legacyAB := TransactionalID(spec("a-b", ""), "", "c", 0)
	if legacyA != legacyAB {
		t.Fatalf("legacy ids %q and %q: the ambiguity this test is about is gone", legacyA, legacyAB)
	}
	if a, ab := TransactionalID(spec("a", ""), inc1, "b-c", 0), TransactionalID(spec("a-b", ""), inc1, "c", 0); a == ab {
		t.Errorf("job a topic b-c and job a-b topic c share the id %q", a)
	}
	if x, y := TransactionalID(spec("a", ""), inc1, "t", 0), TransactionalID(spec("a", ""), inc2, "t", 0); x == y {
		t.Errorf("two incarnations of job a share the id %q", x)
	}
	if x, y := GroupID("a", inc1), GroupID("a", inc2); x == y {
		t.Errorf("two incarnations of job a share the group %q", x)
	}

	// Prefixes made of another job's id parts, including ':' (which
	// validation refuses, but the ids must not depend on it).
	victim := TransactionalID(spec("a", ""), inc1, "t", 0)
	for _, prefix := range []string{
		"sluice:a:" + inc1, "sluice:a:" + inc1 + ":t", "sluice:a", "sluice-a", "sluice:a:" + inc1 + ":t:0",
		"sluice:", ":", "",
	} {
		for _, job := range []string{"a", "b", "t", "0", "a-" + inc1} {
			for _, inc := range []string{inc1, inc2} {
				for _, topic := range []string{"t", "a", inc1, "0"} {
					if job == "a" && inc == inc1 && prefix == "" && topic == "t" {
						continue // the victim itself
					}
					if got := TransactionalID(spec(job, prefix), inc, topic, 0); got == victim {
						t.Errorf("prefix %q, job %q, incarnation %q, topic %q gives job a's id %q", prefix, job, inc, topic, got)
					}
				}
			}
		}
	}
}

// idRE reads an id from the right: partition, topic, incarnation and job
// contain no ':', the prefix is the rest.
var idRE = regexp.MustCompile(`^(.*):([^:]+):([0-9a-f]{16}):([^:]+):([0-9]+)$`)

// TestTransactionalIDDecomposes: random names, from the characters each may
// hold and with prefixes that may contain ':', always read back as the parts
// they were made of, so that distinct parts never give the same id.
func TestTransactionalIDDecomposes(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pick := func(alphabet string, n int) string {
		b := make([]byte, 1+rng.Intn(n))
		for i := range b {
			b[i] = alphabet[rng.Intn(len(alphabet))]
		}
		return string(b)
	}
	seen := map[string]string{}
	for range 20000 {
		prefix := pick("ab-:.", 6)
		job := pick("ab-0", 4)
		inc := NewIncarnation()
		if rng.Intn(2) == 0 {
			inc = []string{inc1, inc2}[rng.Intn(2)]
		}
		topic := pick("ab-._0", 4)
		part := int32(rng.Intn(3))
		id := TransactionalID(spec(job, prefix), inc, topic, part)
		m := idRE.FindStringSubmatch(id)
		if m == nil {
			t.Fatalf("id %q does not read as <prefix>:<job>:<incarnation>:<topic>:<partition>", id)
		}
		parts := fmt.Sprint([]string{prefix, job, inc, topic, strconv.Itoa(int(part))})
		if got := fmt.Sprint(m[1:]); got != parts {
			t.Fatalf("id %q reads as %s, made of %s", id, got, parts)
		}
		if other, ok := seen[id]; ok && other != parts {
			t.Fatalf("id %q made of %s and of %s", id, other, parts)
		}
		seen[id] = parts
	}
}

func TestGroupID(t *testing.T) {
	for _, tc := range []struct{ job, incarnation, want string }{
		{"orders", inc1, "sluice:orders:0123456789abcdef"},
		{"orders", "", "sluice-orders"},
	} {
		if got := GroupID(tc.job, tc.incarnation); got != tc.want {
			t.Errorf("GroupID(%q, %q) = %q, want %q", tc.job, tc.incarnation, got, tc.want)
		}
	}
}

func TestNewIncarnation(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{16}$`)
	seen := map[string]bool{}
	for range 1000 {
		inc := NewIncarnation()
		if !re.MatchString(inc) {
			t.Fatalf("NewIncarnation() = %q, want 16 lowercase hex digits", inc)
		}
		if seen[inc] {
			t.Fatalf("NewIncarnation() returned %q twice", inc)
		}
		seen[inc] = true
	}
}
