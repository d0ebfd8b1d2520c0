package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestServeAndLoad(t *testing.T) {
	addr := freeAddr(t)
	store := "sqlite:" + filepath.Join(t.TempDir(), "orders.db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var serveErr bytes.Buffer
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--store", store, "--listen", addr, "--fault", "sales_summary:drop=1"}, &bytes.Buffer{}, &serveErr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %v\n%s", err, serveErr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"load", "--url", "http://" + addr, "--rate", "500", "--count", "30", "--seed", "3"}, &out, &errOut)
	if err != nil {
		t.Fatalf("load error = %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "commands: 30 ") || !strings.Contains(out.String(), ", 0 failed") {
		t.Errorf("load summary = %q", out.String())
	}
	if errOut.Len() == 0 {
		t.Error("no progress bar on stderr")
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve returned %v after cancel", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr error
		// wantAnyErr accepts any error (a configuration error, not usage).
		wantAnyErr bool
	}{
		{name: "no command", args: nil, wantErr: errUsage},
		{name: "unknown command", args: []string{"frobnicate"}, wantErr: errUsage},
		{name: "help", args: []string{"help"}},
		{name: "serve help", args: []string{"serve", "-h"}, wantErr: flag.ErrHelp},
		{name: "unknown flag", args: []string{"serve", "--nope"}, wantErr: errUsage},
		{name: "bad fault", args: []string{"serve", "--fault", "orders_view:drop=7"}, wantErr: errUsage},
		{name: "extra argument", args: []string{"load", "extra"}, wantErr: errUsage},
		{name: "bad mix", args: []string{"load", "--mix", "create=x"}, wantAnyErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, &bytes.Buffer{}, &bytes.Buffer{})
			if tt.wantAnyErr {
				if err == nil {
					t.Error("run() error = nil, want an error")
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("run() error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
