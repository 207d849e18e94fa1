package auth

import "fmt"

// CheckExposure refuses to serve on a non-loopback address with neither TLS
// nor authentication: anyone who reaches the port could run any job and
// read every result. An operator may insist with --insecure.
func CheckExposure(addr string, tls, authn, insecure bool) error {
	if insecure || tls || authn || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("--grpc-addr %s is not loopback and neither TLS (--tls-cert, --tls-key) nor authentication (--token-file, --jwt-public-key, --tls-client-ca) is configured: "+
		"anyone reaching it could run jobs and read their results; configure them, or pass --insecure to serve anyway", addr)
}
