package client

import (
	"strings"
	"testing"
)

func TestReadSpec(t *testing.T) {
	tests := []struct {
		name, in, want, wantErr string
	}{
		{name: "JSON", in: `{"name": "a", "source": {"topics": ["t"]}}`, want: "a"},
		{name: "JSON after blank lines", in: "\n\n  {\"name\": \"b\"}\n", want: "b"},
		{name: "JSON with a byte order mark", in: "\xef\xbb\xbf{\"name\": \"c\"}", want: "c"},
		{name: "YAML", in: "name: d\nsource:\n  topics: [t]\n", want: "d"},
		{name: "YAML flow mapping on one line", in: "name: e", want: "e"},
		{name: "unknown JSON field", in: `{"nam": "x"}`, wantErr: `standard input: parse job spec: proto:`},
		{name: "unknown YAML field", in: "nam: x\n", wantErr: `unknown field "nam"`},
		{name: "bad YAML", in: "name: [x\n", wantErr: "standard input: parse YAML"},
	}
	for _, tc := range tests {
		spec, err := ReadSpec(strings.NewReader(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: ReadSpec = %v, want an error with %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || spec.GetName() != tc.want {
			t.Errorf("%s: ReadSpec = %v, %v; want name %q", tc.name, spec, err, tc.want)
		}
	}
}
