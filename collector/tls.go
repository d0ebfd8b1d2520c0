package collector

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// TLSConfig is the TLS both OTLP servers (gRPC and HTTP) serve with, and
// (under zipkin.tls) the Zipkin server. The
// files are PEM; they are read at New, and again when they change (their
// modification time or size, looked at no more than once a second, on a
// client's handshake), so that certificates rotate without a restart. A file
// that fails to load then keeps the certificates loaded before, logged at
// Warn.
type TLSConfig struct {
	// CertFile (otlp.tls.cert_file) is the server's certificate, followed by
	// any intermediates. Default "": plaintext, no TLS.
	CertFile string `yaml:"cert_file"`

	// KeyFile (otlp.tls.key_file) is the private key of CertFile. Required
	// with CertFile. Default "".
	KeyFile string `yaml:"key_file"`

	// ClientCAFile (otlp.tls.client_ca_file) holds the CA certificates that
	// client certificates must chain to. When set, every client must present
	// a valid certificate (mutual TLS): one that is missing, expired or
	// issued by another CA fails the handshake. Needs CertFile. Default "":
	// no client certificates asked for.
	ClientCAFile string `yaml:"client_ca_file"`
}

// enabled reports whether the servers use TLS.
func (c TLSConfig) enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// validate reports what cannot be used, naming the keys under section
// (otlp, zipkin).
func (c TLSConfig) validate(section string) []error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New(section+".tls.cert_file and "+section+".tls.key_file must be set together"))
	}
	if c.ClientCAFile != "" && c.CertFile == "" {
		errs = append(errs, errors.New(section+".tls.client_ca_file needs "+section+".tls.cert_file and "+section+".tls.key_file"))
	}
	return errs
}

func (c TLSConfig) files() []string {
	paths := []string{c.CertFile, c.KeyFile}
	if c.ClientCAFile != "" {
		paths = append(paths, c.ClientCAFile)
	}
	return paths
}

// tlsMaterial is what one load of the files gives: the server configs of
// each transport, which differ in the protocols they offer by ALPN.
type tlsMaterial struct {
	grpc, http *tls.Config
}

// serverTLS serves the current tlsMaterial to each new handshake.
type serverTLS struct {
	material *reloading[tlsMaterial]
}

// newServerTLS loads c, whose keys sit under section (otlp, zipkin) in
// errors and logs.
func newServerTLS(c TLSConfig, section string, interval time.Duration, logger *slog.Logger) (*serverTLS, error) {
	what := section + ".tls certificates"
	r, err := newReloading(what, c.files(), interval, logger, func() (*tlsMaterial, error) { return loadTLS(c, section) })
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", what, err)
	}
	return &serverTLS{material: r}, nil
}

func loadTLS(c TLSConfig, section string) (*tlsMaterial, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%s.tls.cert_file %s, %s.tls.key_file %s: %w", section, c.CertFile, section, c.KeyFile, err)
	}
	base := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if c.ClientCAFile != "" {
		b, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.tls.client_ca_file: %w", section, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s.tls.client_ca_file %s: no PEM certificate in it", section, c.ClientCAFile)
		}
		base.ClientAuth = tls.RequireAndVerifyClientCert
		base.ClientCAs = pool
	}
	m := &tlsMaterial{grpc: base.Clone(), http: base}
	// gRPC clients refuse a server that does not select h2 by ALPN.
	m.grpc.NextProtos = []string{"h2"}
	m.http.NextProtos = []string{"h2", "http/1.1"}
	return m, nil
}

// config returns the tls.Config of a listener: each handshake gets the
// material current then, so a rotation applies to new connections and
// leaves open ones as they are.
func (s *serverTLS) config(t transport) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.material.get()
			if t == transportGRPC {
				return m.grpc, nil
			}
			return m.http, nil
		},
	}
}
