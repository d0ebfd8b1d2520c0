// Package kafkaconntest starts in-process Kafka-protocol brokers (kfake)
// with TLS, mutual TLS and SASL for tests of the Kafka clients, with the
// files (CA, client certificate and key, password) a kafkaconn.Config
// names. Test code only: it links franz-go.
package kafkaconntest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/lagscope/lagscope/internal/testpki"
	"github.com/lagscope/lagscope/kafkaconn"
)

// Users of every cluster Start makes: one per SASL mechanism, each a
// superuser, with password Password.
const (
	UserPlain  = "plain-user"
	UserSCRAM  = "scram-user"
	Password   = "s3cret pass"
	wrongPass  = "wrong"
	leafSerial = 100
)

// Options of a cluster.
type Options struct {
	// TLS serves TLS with a certificate for 127.0.0.1 signed by the
	// cluster's CA.
	TLS bool
	// ClientCerts requires client certificates signed by the cluster's CA
	// (mutual TLS); it implies TLS.
	ClientCerts bool
	// SASL requires SASL authentication: PLAIN for UserPlain, SCRAM-SHA-256
	// and SCRAM-SHA-512 for UserSCRAM.
	SASL bool
	// Partitions of each seeded topic; default 1.
	Partitions int32
	// Topics seeded.
	Topics []string
}

// Cluster is a started kfake cluster and the files to reach it with.
type Cluster struct {
	*kfake.Cluster
	// Addr is the broker's host:port.
	Addr string
	// Dir holds ca.crt, client.crt, client.key, password and wrong-password.
	Dir string
}

// Start starts a one-broker cluster with opts, closed at the end of the test.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "kafka test CA")
	writeFile(t, filepath.Join(dir, "ca.crt"), ca.PEM)
	client := ca.Valid(t, leafSerial+1, true)
	writeFile(t, filepath.Join(dir, "client.crt"), client.CertPEM)
	writeFile(t, filepath.Join(dir, "client.key"), client.KeyPEM)
	writeFile(t, filepath.Join(dir, "password"), []byte(Password+"\n"))
	writeFile(t, filepath.Join(dir, "wrong-password"), []byte(wrongPass))

	parts := opts.Partitions
	if parts == 0 {
		parts = 1
	}
	kopts := []kfake.Opt{kfake.NumBrokers(1)}
	if len(opts.Topics) > 0 {
		kopts = append(kopts, kfake.SeedTopics(parts, opts.Topics...))
	}
	if opts.TLS || opts.ClientCerts {
		srv := ca.Valid(t, leafSerial, false)
		tc := &tls.Config{Certificates: []tls.Certificate{srv.TLS}, MinVersion: tls.VersionTLS12}
		if opts.ClientCerts {
			pool := x509.NewCertPool()
			pool.AddCert(ca.Cert)
			tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
		kopts = append(kopts, kfake.TLS(tc))
	}
	if opts.SASL {
		kopts = append(kopts, kfake.EnableSASL(),
			kfake.Superuser(kafkaconn.MechanismPlain, UserPlain, Password),
			kfake.Superuser(kafkaconn.MechanismSCRAMSHA256, UserSCRAM, Password),
			kfake.Superuser(kafkaconn.MechanismSCRAMSHA512, UserSCRAM, Password))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return &Cluster{Cluster: c, Addr: c.ListenAddrs()[0], Dir: dir}
}

// Config returns the kafkaconn.Config of a client of c: TLS trusting c's CA
// when tls is set, with the client certificate when cert is set, and SASL
// with mechanism (if not empty) as the user of that mechanism, with the
// right password or a wrong one.
func (c *Cluster) Config(tls, cert bool, mechanism string, rightPassword bool) kafkaconn.Config {
	var cfg kafkaconn.Config
	if tls || cert {
		cfg.TLS.CAFile = filepath.Join(c.Dir, "ca.crt")
	}
	if cert {
		cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(c.Dir, "client.crt"), filepath.Join(c.Dir, "client.key")
	}
	if mechanism != "" {
		cfg.SASL.Mechanism, cfg.SASL.Username = mechanism, UserSCRAM
		if mechanism == kafkaconn.MechanismPlain {
			cfg.SASL.Username = UserPlain
		}
		cfg.SASL.PasswordFile = filepath.Join(c.Dir, "password")
		if !rightPassword {
			cfg.SASL.PasswordFile = filepath.Join(c.Dir, "wrong-password")
		}
	}
	return cfg
}

// MustOptions returns kafkaconn.New(cfg), failing the test on an error.
func MustOptions(t testing.TB, cfg kafkaconn.Config) *kafkaconn.Options {
	t.Helper()
	o, err := kafkaconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
