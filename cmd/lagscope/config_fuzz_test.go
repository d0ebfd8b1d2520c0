package main

import (
	"strings"
	"testing"

	"github.com/lagscope/lagscope/configfile"
)

// FuzzConfigFile feeds arbitrary documents to the config file decoder and
// the validation behind it: whatever the file, no panic, and every error
// names a key or the document, never a Go type.
func FuzzConfigFile(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzConfigFile.
	f.Fuzz(func(t *testing.T, doc string) {
		c := DefaultConfig()
		err := configfile.Decode([]byte(doc), &c)
		if err == nil {
			err = c.Validate()
		}
		if err == nil {
			return
		}
		msg := err.Error()
		for _, goName := range []string{"time.Duration", "main.", "analyzer.", "collector.", "!!str", "cannot unmarshal"} {
			if strings.Contains(msg, goName) {
				t.Errorf("error speaks of Go (%q): %s", goName, msg)
			}
		}
	})
}
