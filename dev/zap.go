package dev

import (
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EtcdLogger is a zap logger for the etcd client that writes to logger:
// warnings and errors only, since the client's info lines (every
// reconnect, every balancer change) would drown Sluice's own.
func EtcdLogger(logger hclog.Logger) *zap.Logger {
	if logger == nil {
		return zap.NewNop()
	}
	return zap.New(&hclogCore{logger: logger, min: zapcore.WarnLevel})
}

// hclogCore is a zapcore.Core that logs to an hclog.Logger, the fields as
// key/value pairs.
type hclogCore struct {
	logger hclog.Logger
	min    zapcore.Level
	fields []zapcore.Field
}

func (c *hclogCore) Enabled(l zapcore.Level) bool {
	return l >= c.min && c.logger.GetLevel() <= hclogLevel(l)
}

func (c *hclogCore) With(fields []zapcore.Field) zapcore.Core {
	return &hclogCore{logger: c.logger, min: c.min, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *hclogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *hclogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys)+2)
	for _, k := range keys {
		args = append(args, k, enc.Fields[k])
	}
	level := hclogLevel(e.Level)
	if err, ok := enc.Fields["error"].(string); ok && strings.Contains(err, "context canceled") {
		// A call Sluice cancelled itself (a lease revoked at shutdown),
		// which the client logs as a failed retry.
		level = hclog.Debug
	}
	logger := c.logger
	if e.LoggerName != "" {
		logger = logger.Named(e.LoggerName)
	}
	logger.Log(level, e.Message, args...)
	return nil
}

func (c *hclogCore) Sync() error { return nil }

func hclogLevel(l zapcore.Level) hclog.Level {
	switch {
	case l < zapcore.InfoLevel:
		return hclog.Debug
	case l == zapcore.InfoLevel:
		return hclog.Info
	case l == zapcore.WarnLevel:
		return hclog.Warn
	}
	return hclog.Error
}
