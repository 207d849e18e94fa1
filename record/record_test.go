package record

import (
	"bytes"
	"testing"
	"time"
)

// Kafka tells a null key or header value from an empty one; a Record keeps
// the difference, which the steps and sinks pass on.
func TestNullAndEmpty(t *testing.T) {
	tests := []struct {
		name                  string
		rec                   Record
		nullKey, nullValue    bool
		headers               int
		nullHeaderValueAt     int // -1: none
		wantLen, wantValueLen int
	}{
		{name: "zero value", rec: Record{}, nullKey: true, nullValue: true, nullHeaderValueAt: -1},
		{name: "empty key and value", rec: Record{Key: []byte{}, Value: []byte{}}, nullHeaderValueAt: -1},
		{name: "null key", rec: Record{Value: []byte("v")}, nullKey: true, nullHeaderValueAt: -1, wantValueLen: 1},
		{name: "tombstone", rec: Record{Key: []byte("k")}, nullValue: true, nullHeaderValueAt: -1, wantLen: 1},
		{name: "null and empty header values", rec: Record{Key: []byte("k"), Value: []byte("v"), Headers: []Header{
			{Key: "a", Value: []byte{}}, {Key: "b"},
		}}, headers: 2, nullHeaderValueAt: 1, wantLen: 1, wantValueLen: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rec
			if (r.Key == nil) != tc.nullKey || (r.Value == nil) != tc.nullValue {
				t.Errorf("key nil %v, value nil %v; want %v, %v", r.Key == nil, r.Value == nil, tc.nullKey, tc.nullValue)
			}
			if len(r.Key) != tc.wantLen || len(r.Value) != tc.wantValueLen {
				t.Errorf("len(key) %d, len(value) %d; want %d, %d", len(r.Key), len(r.Value), tc.wantLen, tc.wantValueLen)
			}
			if len(r.Headers) != tc.headers {
				t.Fatalf("%d headers, want %d", len(r.Headers), tc.headers)
			}
			for i, h := range r.Headers {
				if (h.Value == nil) != (i == tc.nullHeaderValueAt) {
					t.Errorf("header %d (%q) value nil %v, want %v", i, h.Key, h.Value == nil, i == tc.nullHeaderValueAt)
				}
			}
		})
	}
}

// Headers are a list, not a map: Kafka allows a name more than once, and
// order matters to readers.
func TestHeadersKeepOrderAndRepeats(t *testing.T) {
	r := Record{Headers: []Header{{"trace", []byte("1")}, {"x", nil}, {"trace", []byte("2")}, {"\xff", []byte{0}}}}
	var got []string
	for _, h := range r.Headers {
		got = append(got, h.Key+"="+string(h.Value))
	}
	want := []string{"trace=1", "x=", "trace=2", "\xff=\x00"}
	if len(got) != len(want) {
		t.Fatalf("headers %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("header %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// A Record is a view of the reader's buffers: a copy of the struct shares
// them, so what outlives the callback must copy the bytes (as the steps do).
func TestCopySharesBuffers(t *testing.T) {
	buf := []byte("key|value|hdr")
	r := Record{
		Topic: "clicks", Partition: 3, Offset: 42,
		Key: buf[0:3], Value: buf[4:9], Headers: []Header{{Key: "h", Value: buf[10:13]}},
		Timestamp: time.UnixMilli(1714552200123),
	}
	kept := r   // shares the buffers
	cloned := r // copies them
	cloned.Key, cloned.Value = bytes.Clone(r.Key), bytes.Clone(r.Value)
	cloned.Headers = []Header{{Key: "h", Value: bytes.Clone(r.Headers[0].Value)}}

	copy(buf, "KEY|VALUE|HDR") // the reader reuses its buffer
	tests := []struct {
		name            string
		rec             Record
		key, value, hdr string
	}{
		{"struct copy", kept, "KEY", "VALUE", "HDR"},
		{"bytes cloned", cloned, "key", "value", "hdr"},
	}
	for _, tc := range tests {
		if string(tc.rec.Key) != tc.key || string(tc.rec.Value) != tc.value || string(tc.rec.Headers[0].Value) != tc.hdr {
			t.Errorf("%s: %s=%s (h=%s), want %s=%s (h=%s)", tc.name, tc.rec.Key, tc.rec.Value, tc.rec.Headers[0].Value, tc.key, tc.value, tc.hdr)
		}
		if tc.rec.Topic != "clicks" || tc.rec.Partition != 3 || tc.rec.Offset != 42 || tc.rec.Timestamp.UnixMilli() != 1714552200123 {
			t.Errorf("%s: position %s/%d@%d at %v changed", tc.name, tc.rec.Topic, tc.rec.Partition, tc.rec.Offset, tc.rec.Timestamp)
		}
	}
}
