package client

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/auth"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestWithToken: a token goes in the clear only to loopback addresses; on
// loopback the server sees it (a call that passes authentication reaches
// the unimplemented service).
func TestWithToken(t *testing.T) {
	tokens, err := auth.ParseTokens(strings.NewReader("viewer bob 0123456789abcdef0123\n"))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(auth.NewAuthenticator(tokens, nil, false).ServerOptions()...)
	sluicev1.RegisterJobServiceServer(gs, sluicev1.UnimplementedJobServiceServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()

	for _, tc := range []struct {
		token string
		want  codes.Code
	}{{"0123456789abcdef0123", codes.Unimplemented}, {"wrong-wrong-wrong-wrong", codes.Unauthenticated}} {
		c, err := Dial([]string{lis.Addr().String()}, WithToken(tc.token))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Jobs(context.Background()); status.Code(err) != tc.want {
			t.Errorf("token %q: %v, want %v", tc.token, err, tc.want)
		}
		c.Close()
	}
	if _, err := Dial([]string{lis.Addr().String(), "10.0.0.1:7070"}, WithToken("0123456789abcdef0123")); err == nil || !strings.Contains(err.Error(), "only over TLS") {
		t.Errorf("a token in the clear to a remote address: %v, want refused", err)
	}
}
