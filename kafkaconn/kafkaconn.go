// Package kafkaconn holds how lagscope's Kafka clients connect to the
// brokers, TLS and SASL, and builds the kafka-go Dialers (for Readers) and
// Transports (for Writers and Clients) of every client from one Config: the
// OTLP-from-Kafka reader (collector), the offset lag exporter (kafkalag) and
// the scale-out roles' facts writer and reader (server).
//
// It is a package of its own so that collector and kafkalag share it without
// either importing the other.
package kafkaconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanisms, as Kafka's sasl.mechanism names them.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Config is how the clients connect: the kafka.tls.* and kafka.sasl.* keys.
// The zero value is plaintext without authentication, Kafka's PLAINTEXT
// listener.
type Config struct {
	// TLS configures TLS to the brokers (kafka.tls.*).
	TLS TLSConfig `yaml:"tls"`
	// SASL configures SASL authentication (kafka.sasl.*), over TLS when TLS
	// is on (Kafka's SASL_SSL), in plaintext otherwise (SASL_PLAINTEXT).
	SASL SASLConfig `yaml:"sasl"`
}

// TLSConfig configures TLS to the brokers. It is on when Enabled is set or
// when any other field is: a CA, a client certificate, a server name or
// insecure_skip_verify means TLS.
type TLSConfig struct {
	// Enabled (kafka.tls.enabled) turns TLS on with the system's roots,
	// for a cluster whose certificate a public CA signed. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile (kafka.tls.ca_file) is a PEM file of the CA certificates to
	// verify the brokers with, in place of the system's. Default "".
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile (kafka.tls.cert_file, kafka.tls.key_file) are
	// the PEM client certificate and key presented to brokers that ask for
	// one (mTLS, Kafka's ssl.client.auth=required). Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName (kafka.tls.server_name) is the name verified in the
	// brokers' certificates. Default "": each broker's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify (kafka.tls.insecure_skip_verify) accepts any
	// broker certificate. For tests only. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// On reports whether TLS is to be used.
func (c TLSConfig) On() bool {
	return c.Enabled || c.CAFile != "" || c.CertFile != "" || c.KeyFile != "" || c.ServerName != "" || c.InsecureSkipVerify
}

// SASLConfig configures SASL authentication. The password is read from a
// file, never given on a command line, where ps would show it.
type SASLConfig struct {
	// Mechanism (kafka.sasl.mechanism) is PLAIN, SCRAM-SHA-256 or
	// SCRAM-SHA-512. Default "": no SASL.
	Mechanism string `yaml:"mechanism"`
	// Username (kafka.sasl.username) is the SASL user.
	Username string `yaml:"username"`
	// PasswordFile (kafka.sasl.password_file) holds the password; its
	// content is trimmed of surrounding white space. It is read again for
	// every new connection, so a rotated password needs no restart.
	PasswordFile string `yaml:"password_file"`
}

// On reports whether SASL is to be used.
func (c SASLConfig) On() bool { return c.Mechanism != "" }

// Validate reports every setting that cannot be used, naming its key. It
// reads no file: New does.
func (c Config) Validate() error {
	var errs []error
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("kafka.tls.cert_file and kafka.tls.key_file go together"))
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" || c.SASL.PasswordFile != "" {
			errs = append(errs, errors.New("kafka.sasl.username and kafka.sasl.password_file need kafka.sasl.mechanism"))
		}
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
		if c.SASL.Username == "" {
			errs = append(errs, errors.New("kafka.sasl.username is empty"))
		}
		if c.SASL.PasswordFile == "" {
			errs = append(errs, errors.New("kafka.sasl.password_file is empty"))
		}
	default:
		errs = append(errs, fmt.Errorf("kafka.sasl.mechanism must be %s, %s or %s, got %q", MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512, c.SASL.Mechanism))
	}
	return errors.Join(errs...)
}

// Options are the TLS configuration and SASL mechanism the clients connect
// with, built once from a Config by New. Safe for concurrent use.
type Options struct {
	tls  *tls.Config    // nil: plaintext
	sasl sasl.Mechanism // nil: no SASL
	desc string
}

// New validates c and reads its files: the CA, the client certificate and
// key, and the password (which is read again at each connection). It returns
// an error naming the file it could not use.
func New(c Config) (*Options, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	o := &Options{}
	var desc []string
	if c.TLS.On() {
		t, err := clientTLS(c.TLS)
		if err != nil {
			return nil, err
		}
		o.tls = t
		desc = append(desc, "TLS")
	}
	if c.SASL.On() {
		m := &fileMechanism{mechanism: c.SASL.Mechanism, user: c.SASL.Username, file: c.SASL.PasswordFile}
		if _, err := m.inner(); err != nil {
			return nil, err
		}
		o.sasl = m
		desc = append(desc, "SASL "+c.SASL.Mechanism+" as "+c.SASL.Username)
	}
	if len(desc) == 0 {
		desc = append(desc, "plaintext")
	}
	o.desc = strings.Join(desc, ", ")
	return o, nil
}

func clientTLS(c TLSConfig) (*tls.Config, error) {
	t := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify, //nolint:gosec // an explicit, documented test setting
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read kafka.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka.tls.ca_file %s: no PEM certificate in it", c.CAFile)
		}
		t.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load kafka.tls.cert_file and key_file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

// String says how the clients connect, for logs and errors: "plaintext",
// "TLS", "TLS, SASL SCRAM-SHA-256 as lagscope". It shows no secret.
func (o *Options) String() string {
	if o == nil {
		return "plaintext"
	}
	return o.desc
}

// dialTimeout bounds a connection's setup: TCP, TLS handshake and SASL.
const dialTimeout = 10 * time.Second

// Dialer returns a new Dialer for a kafka.Reader (ReaderConfig.Dialer) that
// connects with o. A nil o connects in plaintext.
func (o *Options) Dialer() *kafka.Dialer {
	d := &kafka.Dialer{Timeout: dialTimeout, DualStack: true}
	if o != nil {
		d.TLS, d.SASLMechanism = o.tls, o.sasl
	}
	return d
}

// Transport returns a new Transport for kafka.Writers and kafka.Clients
// that connects with o; the caller closes its idle connections when done.
// A nil o connects in plaintext.
func (o *Options) Transport() *kafka.Transport {
	t := &kafka.Transport{DialTimeout: dialTimeout}
	if o != nil {
		t.TLS, t.SASL = o.tls, o.sasl
	}
	return t
}

// ErrAuthentication marks an error of Check (and of Explain) that is the
// brokers refusing the client: a failed TLS handshake or certificate
// verification, or failed SASL authentication. Retrying does not help.
var ErrAuthentication = errors.New("kafka authentication failed")

// Check connects to brokers one at a time with o until one accepts the
// connection (TLS handshake and SASL authentication included) and answers,
// within ctx. It returns nil once one did. If a broker refused the client's
// TLS or credentials, it returns an error wrapping ErrAuthentication that
// names the broker and the mechanism; if none could be reached, an error
// naming the last. Callers fail on ErrAuthentication and may go on (the
// clients retry) otherwise.
func (o *Options) Check(ctx context.Context, brokers []string) error {
	var last error
	for _, b := range brokers {
		c, err := o.Dialer().DialContext(ctx, "tcp", b)
		if err == nil {
			// Metadata: brokers answer ApiVersions before SASL too.
			_, err = c.Brokers()
			c.Close()
		}
		if err == nil {
			return nil
		}
		last = o.Explain(b, err)
		if errors.Is(last, ErrAuthentication) || ctx.Err() != nil {
			return last
		}
	}
	return last
}

// Explain wraps err, an error connecting to or talking with broker, with
// what was being done, and with ErrAuthentication when it is the broker
// refusing o's TLS or SASL credentials. Other errors are wrapped with the
// broker alone.
func (o *Options) Explain(broker string, err error) error {
	if err == nil {
		return nil
	}
	if authError(err) {
		return fmt.Errorf("connect to Kafka broker %s with %s: %w: %w", broker, o, ErrAuthentication, err)
	}
	if o.String() == "plaintext" && errors.Is(err, io.EOF) {
		// What a TLS or SASL listener does to a plaintext client.
		return fmt.Errorf("connect to Kafka broker %s with %s (the broker closed the connection: does its listener want TLS or SASL? see kafka.tls.*, kafka.sasl.*): %w", broker, o, err)
	}
	return fmt.Errorf("connect to Kafka broker %s with %s: %w", broker, o, err)
}

// Diagnose returns err, an error of a client talking to brokers, explained:
// when it is a refusal of o's credentials, or a connection closed under the
// client (which is how a Transport reports a failed SCRAM exchange or a TLS
// listener it talks plaintext to), it runs Check within ctx and returns its
// error wrapping ErrAuthentication if that is what it finds. Otherwise it
// returns err unchanged. Call it on errors only: Check opens a connection.
func (o *Options) Diagnose(ctx context.Context, brokers []string, err error) error {
	if err == nil || errors.Is(err, ErrAuthentication) {
		return err
	}
	if authError(err) {
		return o.Explain(strings.Join(brokers, ","), err)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	if cerr := o.Check(ctx, brokers); errors.Is(cerr, ErrAuthentication) {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}

// IsAuthError reports whether err is a broker refusing the client's TLS or
// SASL credentials, which a retry does not cure.
func IsAuthError(err error) bool { return errors.Is(err, ErrAuthentication) || authError(err) }

func authError(err error) bool {
	var (
		ke   kafka.Error
		cve  *tls.CertificateVerificationError
		uae  x509.UnknownAuthorityError
		hne  x509.HostnameError
		cie  x509.CertificateInvalidError
		rhe  tls.RecordHeaderError
		alrt tls.AlertError
	)
	if errors.As(err, &ke) {
		switch ke {
		case kafka.SASLAuthenticationFailed, kafka.UnsupportedSASLMechanism, kafka.IllegalSASLState:
			return true
		}
	}
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie) ||
		errors.As(err, &rhe) || errors.As(err, &alrt) {
		return true
	}
	// An alert the broker sent (a client certificate it wants or refuses)
	// has an unexported type in crypto/tls: its net.OpError says so.
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

// fileMechanism is a SASL mechanism whose password is read from a file at
// each connection, so that a rotated password is used without a restart.
type fileMechanism struct {
	mechanism, user, file string
}

func (m *fileMechanism) Name() string { return m.mechanism }

func (m *fileMechanism) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	in, err := m.inner()
	if err != nil {
		return nil, nil, err
	}
	return in.Start(ctx)
}

// inner reads the password and returns the kafka-go mechanism with it.
func (m *fileMechanism) inner() (sasl.Mechanism, error) {
	b, err := os.ReadFile(m.file)
	if err != nil {
		return nil, fmt.Errorf("read kafka.sasl.password_file: %w", err)
	}
	pass := string(bytes.TrimSpace(b))
	if pass == "" {
		return nil, fmt.Errorf("kafka.sasl.password_file %s is empty", m.file)
	}
	switch m.mechanism {
	case MechanismPlain:
		return plain.Mechanism{Username: m.user, Password: pass}, nil
	case MechanismSCRAMSHA256:
		return scram.Mechanism(scram.SHA256, m.user, pass)
	case MechanismSCRAMSHA512:
		return scram.Mechanism(scram.SHA512, m.user, pass)
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism %q is not supported", m.mechanism)
}
