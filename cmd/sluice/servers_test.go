package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "512KiB", want: 512 << 10},
		{in: "64MiB", want: 64 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "100B", want: 100},
		{in: "8589934591GiB", want: 1<<63 - 1<<30},
		{in: "8589934592GiB", wantErr: true}, // 2^63 overflows int64
		{in: "-1", wantErr: true},
		{in: "64MB", wantErr: true},
		{in: "lots", wantErr: true},
	}
	for _, tc := range tests {
		var b byteSize
		err := b.Set(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && int64(b) != tc.want) {
			t.Errorf("Set(%q) = %d, %v; want %d, error %v", tc.in, b, err, tc.want, tc.wantErr)
		}
	}
	for n, want := range map[int64]string{0: "0", 64 << 20: "64MiB", 1<<20 + 1: "1048577", 3 << 10: "3KiB", 1 << 30: "1GiB"} {
		b := byteSize(n)
		if got := b.String(); got != want {
			t.Errorf("byteSize(%d).String() = %q, want %q", n, got, want)
		}
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var v int64 = 64 << 20
	fs.Var((*byteSize)(&v), "keep-bytes", "")
	if err := fs.Parse([]string{"--keep-bytes", "1MiB"}); err != nil || v != 1<<20 {
		t.Errorf("--keep-bytes 1MiB = %d, %v", v, err)
	}
	if err := fs.Parse([]string{"--keep-bytes", "many"}); err == nil {
		t.Errorf("--keep-bytes many: no error")
	}
}

func TestLabelFlags(t *testing.T) {
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var labels []string
	fs.Var((*labelFlags)(&labels), "label", "")
	if err := fs.Parse([]string{"--label", "gpu", "--label", "zone=eu-1"}); err != nil {
		t.Fatal(err)
	}
	if len(labels) != 2 || labels[0] != "gpu" || labels[1] != "zone=eu-1" {
		t.Errorf("labels = %q, want [gpu zone=eu-1]", labels)
	}
	for _, bad := range []string{"", "two words", "x/y", strings.Repeat("a", 64)} {
		if err := fs.Parse([]string{"--label", bad}); err == nil {
			t.Errorf("--label %q: no error", bad)
		}
	}
}
