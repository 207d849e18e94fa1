package auth

import (
	"strings"
	"testing"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7070": true, "127.3.2.1:1": true, "[::1]:7070": true, "localhost:7070": true, "LOCALHOST": true,
		"::1": true, "0.0.0.0:7070": false, ":7070": false, "10.0.0.1:7070": false, "example.com:7070": false, "[::]:7070": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestBearerFor(t *testing.T) {
	if b := BearerFor("t", "127.0.0.1:7070"); b.RequireTransportSecurity() {
		t.Error("a loopback token requires TLS")
	}
	if b := BearerFor("t", "10.1.2.3:7070"); !b.RequireTransportSecurity() {
		t.Error("a remote token does not require TLS")
	}
	md, _ := BearerFor("abc", "x:1").GetRequestMetadata(t.Context())
	if md["authorization"] != "Bearer abc" {
		t.Errorf("metadata %v", md)
	}
}

func TestCheckExposure(t *testing.T) {
	tests := []struct {
		addr                 string
		tls, authn, insecure bool
		ok                   bool
	}{
		{"127.0.0.1:7070", false, false, false, true},
		{"[::1]:7070", false, false, false, true},
		{"0.0.0.0:7070", false, false, false, false},
		{":7070", false, false, false, false},
		{"10.0.0.5:7070", true, false, false, true},
		{"10.0.0.5:7070", false, true, false, true},
		{"10.0.0.5:7070", false, false, true, true},
	}
	for _, tc := range tests {
		err := CheckExposure(tc.addr, tc.tls, tc.authn, tc.insecure)
		if (err == nil) != tc.ok {
			t.Errorf("CheckExposure(%s, tls %v, auth %v, insecure %v) = %v, want ok %v", tc.addr, tc.tls, tc.authn, tc.insecure, err, tc.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), tc.addr) || !strings.Contains(err.Error(), "--insecure")) {
			t.Errorf("CheckExposure error %q names neither the address nor --insecure", err)
		}
	}
}
