package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/golang-jwt/jwt/v5"
)

// JWTVerifier checks JWTs signed by the holder of one key: the token's sub
// is the principal and its role claim the role; exp is required.
type JWTVerifier struct {
	key     any
	methods []string
}

// LoadJWTKey reads a PEM public key (PKIX "PUBLIC KEY", PKCS#1 "RSA PUBLIC
// KEY" or a "CERTIFICATE") of type RSA, ECDSA or Ed25519.
func LoadJWTKey(file string) (*JWTVerifier, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("jwt public key: %w", err)
	}
	v, err := ParseJWTKey(b)
	if err != nil {
		return nil, fmt.Errorf("jwt public key %s: %w", file, err)
	}
	return v, nil
}

// ParseJWTKey parses a PEM public key (see LoadJWTKey).
func ParseJWTKey(pemBytes []byte) (*JWTVerifier, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(block.Bytes)
		if err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("PEM block %q: want PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", block.Type)
	}
	if err != nil {
		return nil, err
	}
	// Only the algorithms of the key's type: a token cannot pick another
	// (such as HS256 keyed with the public key).
	v := &JWTVerifier{key: key}
	switch key.(type) {
	case *rsa.PublicKey:
		v.methods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
	case *ecdsa.PublicKey:
		v.methods = []string{"ES256", "ES384", "ES512"}
	case ed25519.PublicKey:
		v.methods = []string{"EdDSA"}
	default:
		return nil, fmt.Errorf("%T keys are not supported: use RSA, ECDSA or Ed25519", key)
	}
	return v, nil
}

// Claims are the claims Sluice reads from a JWT.
type Claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// Verify checks a token's signature and expiry and returns its principal.
func (v *JWTVerifier) Verify(token string) (Principal, error) {
	claims := &Claims{}
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return v.key, nil },
		jwt.WithValidMethods(v.methods), jwt.WithExpirationRequired())
	if err != nil {
		return Principal{}, fmt.Errorf("jwt: %w", err)
	}
	if claims.Subject == "" {
		return Principal{}, errors.New("jwt: the token has no sub claim")
	}
	if claims.Role == "" {
		return Principal{}, errors.New("jwt: the token has no role claim")
	}
	role, err := ParseRole(claims.Role)
	if err != nil {
		return Principal{}, fmt.Errorf("jwt: role claim: %w", err)
	}
	return Principal{Name: claims.Subject, Role: role, Method: "jwt"}, nil
}
