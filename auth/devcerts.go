package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DevClient is a client certificate that EnsureDevCerts makes: Name is the
// Subject CommonName (the principal), Role its OrganizationalUnit.
type DevClient struct {
	Name string
	Role Role
}

// DevCerts are the files EnsureDevCerts keeps in its directory.
type DevCerts struct {
	Dir string
}

// CA is the CA certificate: clients trust it, the server checks client
// certificates against it.
func (d DevCerts) CA() string { return filepath.Join(d.Dir, "ca.pem") }

// ServerCert and ServerKey are the server's, for 127.0.0.1, ::1 and localhost.
func (d DevCerts) ServerCert() string { return filepath.Join(d.Dir, "server.pem") }
func (d DevCerts) ServerKey() string  { return filepath.Join(d.Dir, "server-key.pem") }

// ClientCert and ClientKey are a DevClient's.
func (d DevCerts) ClientCert(name string) string { return filepath.Join(d.Dir, name+".pem") }
func (d DevCerts) ClientKey(name string) string  { return filepath.Join(d.Dir, name+"-key.pem") }

func (d DevCerts) caKey() string { return filepath.Join(d.Dir, "ca-key.pem") }

// devValidity is how long the throwaway certificates last.
const devValidity = 365 * 24 * time.Hour

// EnsureDevCerts makes a throwaway CA (ECDSA P-256) in dir, a server
// certificate for the loopback addresses and a client certificate for each
// of clients, all signed by it. Only what is missing is made: files already
// there are used and never overwritten; a certificate whose key is missing
// (or the other way round) is an error.
func EnsureDevCerts(dir string, clients []DevClient) (DevCerts, error) {
	d := DevCerts{Dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return d, fmt.Errorf("dev certificates: %w", err)
	}
	ca, caKey, err := d.ensureCA()
	if err != nil {
		return d, err
	}
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "sluice dev server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if err := ensureLeaf(d.ServerCert(), d.ServerKey(), server, ca, caKey); err != nil {
		return d, err
	}
	for _, c := range clients {
		if c.Name == "" || filepath.Base(c.Name) != c.Name || c.Name == "ca" || c.Name == "server" {
			return d, fmt.Errorf("dev certificates: client name %q cannot name a file in %s", c.Name, dir)
		}
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: c.Name, OrganizationalUnit: []string{string(c.Role)}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := ensureLeaf(d.ClientCert(c.Name), d.ClientKey(c.Name), tmpl, ca, caKey); err != nil {
			return d, err
		}
	}
	return d, nil
}

func (d DevCerts) ensureCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certOK, keyOK := exists(d.CA()), exists(d.caKey())
	if certOK != keyOK {
		return nil, nil, fmt.Errorf("dev certificates: %s and %s go together; one is missing (remove the other to make a new CA)", d.CA(), d.caKey())
	}
	if certOK {
		return loadCA(d.CA(), d.caKey())
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "sluice dev CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := sign(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKeyPair(d.CA(), d.caKey(), der, key); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func ensureLeaf(certFile, keyFile string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	certOK, keyOK := exists(certFile), exists(keyFile)
	if certOK && keyOK {
		return nil
	}
	if certOK != keyOK {
		return fmt.Errorf("dev certificates: %s and %s go together; one is missing (remove the other to make a new pair)", certFile, keyFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := sign(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	return writeKeyPair(certFile, keyFile, der, key)
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour) // a little clock skew
	tmpl.NotAfter = time.Now().Add(devValidity)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("dev certificates: sign %s: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

func writeKeyPair(certFile, keyFile string, der []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeNew(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeNew creates file; it fails rather than replace one that exists.
func writeNew(file string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("dev certificates: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("dev certificates: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("dev certificates: %w", err)
	}
	return nil
}

func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cert, err := readPEM(certFile, "CERTIFICATE")
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(cert)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certificates: %s: %w", certFile, err)
	}
	keyDER, err := readPEM(keyFile, "PRIVATE KEY")
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, nil, fmt.Errorf("dev certificates: %s: %w", keyFile, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("dev certificates: %s holds a %T, want an ECDSA key", keyFile, k)
	}
	return ca, key, nil
}

func readPEM(file, typ string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("dev certificates: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("dev certificates: %s holds no PEM %s", file, typ)
	}
	return block.Bytes, nil
}

func exists(file string) bool {
	_, err := os.Stat(file)
	return !errors.Is(err, fs.ErrNotExist)
}
