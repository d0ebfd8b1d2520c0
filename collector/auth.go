package collector

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// AuthConfig is how OTLP clients authenticate, over both transports.
type AuthConfig struct {
	// BearerTokenFile (otlp.auth.bearer_token_file) names a file holding a
	// token, surrounding white space trimmed; every export request must then
	// carry "Authorization: Bearer <token>" (OTLP exporters send it with
	// their headers option, e.g. OTEL_EXPORTER_OTLP_HEADERS). Requests
	// without it are refused before their body is read, with HTTP 401 or gRPC
	// Unauthenticated, and counted in lagscope_rejected_requests_total under
	// reason "unauthenticated". The file is read at New and again when it
	// changes (looked at no more than once a second), so the token rotates
	// without a restart; a file that cannot be read or is empty then keeps
	// the token loaded before. Use it with TLS, or the token crosses the
	// network in clear. Default "": no authentication.
	BearerTokenFile string `yaml:"bearer_token_file"`
}

func (c AuthConfig) enabled() bool { return c.BearerTokenFile != "" }

// bearerAuth checks the bearer token of requests.
type bearerAuth struct {
	// digest is the SHA-256 of the token: comparing digests of equal
	// length tells nothing of the token's length either.
	digest *reloading[[sha256.Size]byte]
}

func newBearerAuth(c AuthConfig, interval time.Duration, logger *slog.Logger) (*bearerAuth, error) {
	path := c.BearerTokenFile
	r, err := newReloading("OTLP bearer token", []string{path}, interval, logger, func() (*[sha256.Size]byte, error) {
		return loadToken(path)
	})
	if err != nil {
		return nil, fmt.Errorf("load otlp.auth.bearer_token_file: %w", err)
	}
	return &bearerAuth{digest: r}, nil
}

var errEmptyToken = errors.New("the token is empty")

func loadToken(path string) (*[sha256.Size]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tok := bytes.TrimSpace(b)
	if len(tok) == 0 {
		return nil, fmt.Errorf("%s: %w", path, errEmptyToken)
	}
	sum := sha256.Sum256(tok)
	return &sum, nil
}

// authorized reports whether the values of a request's Authorization header
// carry the token. More than one value is refused rather than guessed at.
func (a *bearerAuth) authorized(values []string) bool {
	if len(values) != 1 {
		return false
	}
	// RFC 6750 section 2.1: the scheme is case-insensitive (RFC 9110
	// section 11.1), followed by one or more spaces and the token.
	scheme, tok, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimLeft(tok, " ")))
	want := a.digest.get()
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// unauthenticated is the error of a request without the token.
func unauthenticated() *requestError {
	return newRequestError(reasonUnauthenticated, "missing or invalid bearer token")
}
