package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/kafkasrc"
)

func TestKafkaPolicyFlags(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args    []string
		want    kafkasrc.Policy
		wantErr string
	}{
		{args: nil},
		{args: []string{"--kafka-file-dir", dir, "--allow-kafka-property", "plugin.library.paths", "--allow-kafka-property", "ssl.providers",
			"--allowed-bootstrap", "k1:9092, k2:9092", "--allowed-bootstrap", "k3:9093"},
			want: kafkasrc.Policy{FileDir: dir, Allow: []string{"plugin.library.paths", "ssl.providers"}, Bootstrap: []string{"k1:9092", "k2:9092", "k3:9093"}}},
		{args: []string{"--kafka-file-dir", dir + "/none"}, wantErr: "kafka-file-dir"},
		{args: []string{"--allowed-bootstrap", "k1"}, wantErr: `"k1": want host:port`},
		{args: []string{"--allow-kafka-property", " "}, wantErr: "empty property name"},
	}
	for _, tc := range tests {
		fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var p kafkasrc.Policy
		kafkaPolicyFlags(fs, &p)
		err := fs.Parse(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if p.FileDir != tc.want.FileDir || !slices.Equal(p.Allow, tc.want.Allow) || !slices.Equal(p.Bootstrap, tc.want.Bootstrap) {
			t.Errorf("%q: policy %+v, want %+v", tc.args, p, tc.want)
		}
	}
}
