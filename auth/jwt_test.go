package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func pemPublic(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func signed(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTVerify(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	future := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Hour).Unix()

	ecV, err := ParseJWTKey(pemPublic(t, &ecKey.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	rsaV, err := ParseJWTKey(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}))
	if err != nil {
		t.Fatal(err)
	}
	edV, err := ParseJWTKey(pemPublic(t, edPub))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		v       *JWTVerifier
		token   string
		want    Principal
		wantErr string
	}{
		{"ecdsa", ecV, signed(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "alice", "role": "admin", "exp": future}),
			Principal{Name: "alice", Role: RoleAdmin, Method: "jwt"}, ""},
		{"rsa", rsaV, signed(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "bob", "role": "viewer", "exp": future}),
			Principal{Name: "bob", Role: RoleViewer, Method: "jwt"}, ""},
		{"ed25519", edV, signed(t, jwt.SigningMethodEdDSA, edKey, jwt.MapClaims{"sub": "w1", "role": "worker", "exp": future}),
			Principal{Name: "w1", Role: RoleWorker, Method: "jwt"}, ""},
		{"expired", ecV, signed(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "alice", "role": "admin", "exp": past}), Principal{}, "token is expired"},
		{"no exp", ecV, signed(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "alice", "role": "admin"}), Principal{}, "exp claim is required"},
		{"wrong key", ecV, signed(t, jwt.SigningMethodES256, otherEC, jwt.MapClaims{"sub": "alice", "role": "admin", "exp": future}), Principal{}, "signature is invalid"},
		{"other algorithm", ecV, signed(t, jwt.SigningMethodHS256, pemPublic(t, &ecKey.PublicKey), jwt.MapClaims{"sub": "alice", "role": "admin", "exp": future}), Principal{}, "signing method HS256 is invalid"},
		{"no role", ecV, signed(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "alice", "exp": future}), Principal{}, "no role claim"},
		{"bad role", ecV, signed(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "alice", "role": "root", "exp": future}), Principal{}, `unknown role "root"`},
		{"no sub", ecV, signed(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"role": "admin", "exp": future}), Principal{}, "no sub claim"},
		{"garbage", ecV, "a.b.c", Principal{}, "jwt:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.v.Verify(tc.token)
			if tc.wantErr == "" {
				if err != nil || p != tc.want {
					t.Fatalf("Verify = %+v, %v; want %+v", p, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Verify = %+v, %v; want an error containing %q", p, err, tc.wantErr)
			}
		})
	}
}

func TestParseJWTKeyErrors(t *testing.T) {
	for name, in := range map[string][]byte{
		"not PEM":     []byte("hello"),
		"private key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"bad DER":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}}),
	} {
		if _, err := ParseJWTKey(in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
