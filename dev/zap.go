package dev

import "go.uber.org/zap"

// nopZap keeps the etcd client's own logging quiet; Sluice logs through hclog.
func nopZap() *zap.Logger { return zap.NewNop() }
