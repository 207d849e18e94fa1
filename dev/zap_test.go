package dev

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
)

// TestEtcdLogger: the etcd client's zap logs reach hclog at warn and
// above, with their fields, one JSON object per line under JSONFormat.
func TestEtcdLogger(t *testing.T) {
	var buf bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Name: "sluice", Level: hclog.Debug, Output: &buf, JSONFormat: true})
	z := EtcdLogger(logger.Named("etcd")).With(zap.String("endpoint", "127.0.0.1:2379"))
	z.Info("balancer changed")
	z.Warn("lost the watch stream", zap.Int("attempt", 3), zap.Error(errors.New("connection refused")))
	z.Error("lease keepalive failed")
	z.Warn("retrying of unary invoker failed", zap.Error(errors.New("rpc error: code = Canceled desc = context canceled")))

	type line struct {
		Level    string `json:"@level"`
		Message  string `json:"@message"`
		Module   string `json:"@module"`
		Endpoint string `json:"endpoint"`
		Attempt  int    `json:"attempt"`
		Error    string `json:"error"`
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var ln line
		if err := json.Unmarshal([]byte(l), &ln); err != nil {
			t.Fatalf("not a JSON line: %v: %s", err, l)
		}
		got = append(got, ln)
	}
	want := []line{
		{Level: "warn", Message: "lost the watch stream", Module: "sluice.etcd", Endpoint: "127.0.0.1:2379", Attempt: 3, Error: "connection refused"},
		{Level: "error", Message: "lease keepalive failed", Module: "sluice.etcd", Endpoint: "127.0.0.1:2379"},
		{Level: "debug", Message: "retrying of unary invoker failed", Module: "sluice.etcd", Endpoint: "127.0.0.1:2379",
			Error: "rpc error: code = Canceled desc = context canceled"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d (info dropped):\n%s", len(got), len(want), buf.String())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestEtcdLoggerLevel: an hclog logger at error drops the client's warnings.
func TestEtcdLoggerLevel(t *testing.T) {
	var buf bytes.Buffer
	z := EtcdLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: &buf}))
	z.Warn("lost the watch stream")
	if buf.Len() != 0 {
		t.Errorf("a warning passed an error-level logger: %s", buf.String())
	}
}
