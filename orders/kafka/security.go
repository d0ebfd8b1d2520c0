package kafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanisms of SASLConfig.Mechanism, as Kafka names them.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// TLSConfig configures TLS to the brokers (flags --kafka.tls.*). It is on
// when Enabled is set or any other field is.
type TLSConfig struct {
	// Enabled turns TLS on with the system's roots. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of the CAs to verify the brokers with, in place
	// of the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key, for
	// brokers that require one (mTLS). Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is verified in the brokers' certificates. Default: each
	// broker's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any broker certificate (tests only).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (c TLSConfig) on() bool {
	return c.Enabled || c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// SASLConfig configures SASL authentication (flags --kafka.sasl.*).
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; "" is no SASL.
	Mechanism string `yaml:"mechanism"`
	// Username is the SASL user.
	Username string `yaml:"username"`
	// PasswordFile holds the password (trimmed). It is read again at each
	// new connection, so that a rotated password needs no restart; there is
	// no password setting, which a command line would show to ps.
	PasswordFile string `yaml:"password_file"`
}

func (c Config) validateSecurity() error {
	var errs []error
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("kafka: tls cert file and key file go together"))
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" || c.SASL.PasswordFile != "" {
			errs = append(errs, errors.New("kafka: sasl username and password file need a sasl mechanism"))
		}
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		if c.SASL.Username == "" || c.SASL.PasswordFile == "" {
			errs = append(errs, errors.New("kafka: sasl needs a username and a password file"))
		}
	default:
		errs = append(errs, fmt.Errorf("kafka: sasl mechanism must be %s, %s or %s, got %q", MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512, c.SASL.Mechanism))
	}
	return errors.Join(errs...)
}

// security is what the clients connect with, built from a Config.
type security struct {
	tls  *tls.Config
	sasl sasl.Mechanism
	desc string // "plaintext", "TLS, SASL SCRAM-SHA-512 as orders"
}

const dialTimeout = 10 * time.Second

// newSecurity reads the files of c's TLS and SASL settings.
func newSecurity(c Config) (*security, error) {
	s := &security{}
	var desc []string
	if c.TLS.on() {
		t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify} //nolint:gosec // documented test setting
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka: read tls ca file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka: tls ca file %s: no PEM certificate in it", c.TLS.CAFile)
			}
			t.RootCAs = pool
		}
		if c.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafka: load tls client certificate: %w", err)
			}
			t.Certificates = []tls.Certificate{cert}
		}
		s.tls = t
		desc = append(desc, "TLS")
	}
	if c.SASL.Mechanism != "" {
		m := &fileMechanism{mechanism: c.SASL.Mechanism, user: c.SASL.Username, file: c.SASL.PasswordFile}
		if _, err := m.inner(); err != nil {
			return nil, err
		}
		s.sasl = m
		desc = append(desc, "SASL "+c.SASL.Mechanism+" as "+c.SASL.Username)
	}
	if len(desc) == 0 {
		desc = []string{"plaintext"}
	}
	s.desc = strings.Join(desc, ", ")
	return s, nil
}

func (s *security) transport() *kafka.Transport {
	return &kafka.Transport{DialTimeout: dialTimeout, TLS: s.tls, SASL: s.sasl}
}

func (s *security) dialer() *kafka.Dialer {
	return &kafka.Dialer{Timeout: dialTimeout, DualStack: true, TLS: s.tls, SASLMechanism: s.sasl}
}

// check connects to the brokers until one accepts the connection (TLS and
// SASL included) and answers a metadata request. Its error names the broker
// and how it connected: a Transport reports a refused SCRAM exchange as a
// closed connection, a Dialer says what it was.
func (s *security) check(ctx context.Context, brokers []string) error {
	var err error
	for _, b := range brokers {
		var c *kafka.Conn
		if c, err = s.dialer().DialContext(ctx, "tcp", b); err == nil {
			_, err = c.Brokers()
			c.Close()
		}
		if err == nil {
			return nil
		}
		err = fmt.Errorf("kafka: connect to broker %s with %s: %w", b, s.desc, err)
	}
	return err
}

// fileMechanism reads its password from a file at each connection.
type fileMechanism struct{ mechanism, user, file string }

func (m *fileMechanism) Name() string { return m.mechanism }

func (m *fileMechanism) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	in, err := m.inner()
	if err != nil {
		return nil, nil, err
	}
	return in.Start(ctx)
}

func (m *fileMechanism) inner() (sasl.Mechanism, error) {
	b, err := os.ReadFile(m.file)
	if err != nil {
		return nil, fmt.Errorf("kafka: read sasl password file: %w", err)
	}
	pass := string(bytes.TrimSpace(b))
	if pass == "" {
		return nil, fmt.Errorf("kafka: sasl password file %s is empty", m.file)
	}
	switch m.mechanism {
	case MechanismPlain:
		return plain.Mechanism{Username: m.user, Password: pass}, nil
	case MechanismSCRAMSHA256:
		return scram.Mechanism(scram.SHA256, m.user, pass)
	case MechanismSCRAMSHA512:
		return scram.Mechanism(scram.SHA512, m.user, pass)
	}
	return nil, fmt.Errorf("kafka: sasl mechanism %q is not supported", m.mechanism)
}
