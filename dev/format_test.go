package dev

import (
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestFormatCap(t *testing.T) {
	for _, tc := range []struct {
		cap  *sluicev1.BatchCap
		want string
	}{
		{nil, "-"},
		{&sluicev1.BatchCap{Source: sluicev1.CapSource_CAP_SOURCE_NONE}, "none"},
		{&sluicev1.BatchCap{Source: sluicev1.CapSource_CAP_SOURCE_INITIAL, Rate: 100000, MaxRecords: 100000, Limited: true}, "initial 100000/s, 100000 records (limited)"},
		{&sluicev1.BatchCap{Source: sluicev1.CapSource_CAP_SOURCE_ESTIMATE, Rate: 7200, MaxRecords: 7200}, "estimate 7200/s, 7200 records"},
		{&sluicev1.BatchCap{Source: sluicev1.CapSource_CAP_SOURCE_STATIC, MaxRecords: 640, Limited: true}, "static, 640 records (limited)"},
		{&sluicev1.BatchCap{Source: sluicev1.CapSource_CAP_SOURCE_MIN_RATE, MaxRecords: 800}, "min-rate, 800 records"},
	} {
		if got := FormatCap(tc.cap); got != tc.want {
			t.Errorf("FormatCap(%v) = %q, want %q", tc.cap, got, tc.want)
		}
	}
}
