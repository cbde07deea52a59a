// Command validate checks Grafana dashboard JSON files against the dashboard schema of the
// Apache-2.0 grafana-foundation-sdk: each file is unmarshalled strictly into its
// dashboard.Dashboard (unknown or missing fields and wrong types are errors; panel options,
// field config and queries by their plugin's own types) and then validated. It prints one
// line per failing file, naming it, and exits 1 if any file fails.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// failure is nil for the empty cog.BuildErrors the SDK returns as an error when all is well.
func failure(err error) error {
	var errs cog.BuildErrors
	if errors.As(err, &errs) && len(errs) == 0 {
		return nil
	}
	return err
}

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var board dashboard.Dashboard
	if err := failure(board.UnmarshalJSONStrict(raw)); err != nil {
		return err
	}
	return failure(board.Validate())
}

func main() {
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range os.Args[1:] {
		if err := check(path); err != nil {
			fmt.Printf("%s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
