package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/smartmaintenance/relay/admin"
)

// stdinTerminal reports whether standard input is a terminal someone can
// answer at: a character device other than /dev/null, which is a character
// device too and what a script, cron or CI job without input has. A
// variable, so that a test can be that someone.
var stdinTerminal = func() bool {
	fi, err := os.Stdin.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

// confirmDelete asks, as the Webhooks page does, to type the name of the
// webhook about to be deleted, and refuses unless it is typed exactly.
// Without a terminal to ask on (a script, cron, CI) it does not ask: the
// command was written down, not typed by a hand that slipped.
func confirmDelete(ctx context.Context, c *cobra.Command, cl *admin.Client, id string) error {
	if !stdinTerminal() {
		return nil
	}
	h, err := getWebhook(ctx, cl, id)
	if err != nil {
		return err
	}
	stderr := c.ErrOrStderr()
	fmt.Fprintf(stderr, "Delete webhook %d \"%s\" of company %d? Type its name to confirm: ", h.ID, safe(h.Name), h.CompanyID)
	typed := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(c.InOrStdin()).ReadString('\n')
		typed <- line
	}()
	select {
	case <-ctx.Done(): // Ctrl-C: the signal is the command's to handle
		fmt.Fprintln(stderr)
		return errors.New("not deleted: interrupted")
	case line := <-typed:
		if !strings.HasSuffix(line, "\n") {
			fmt.Fprintln(stderr) // end of input: the prompt's line ends here
		}
		if strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r") != h.Name {
			return errors.New("not deleted: what was typed is not the webhook's name")
		}
	}
	return nil
}
