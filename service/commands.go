package service

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"

	"github.com/smartmaintenance/relay/cdc"
	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/event"
	"github.com/smartmaintenance/relay/internal/pgconnect"
	"github.com/smartmaintenance/relay/mapper"
	"github.com/smartmaintenance/relay/secrets"
	"github.com/smartmaintenance/relay/store"
)

// inspectDatabase connects to the platform database, checks that it can
// feed the relay and works out which events it offers.
func inspectDatabase(ctx context.Context, cfg *config.Config, m *mapper.Mapper) (Catalogue, error) {
	conn, err := connect(ctx, cfg.Database.URL)
	if err != nil {
		return Catalogue{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := cdc.Preflight(ctx, conn); err != nil {
		return Catalogue{}, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return Inspect(ctx, conn, m)
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	if url == "" {
		return nil, fmt.Errorf("%w: database.url is required (or RELAY_DATABASE__URL)", ErrConfig)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("%w: connect: %w", ErrDatabase, pgconnect.Explain(err))
	}
	return conn, nil
}

// openStore opens and migrates the relay's state database.
func openStore(ctx context.Context, cfg *config.Config) (*store.Store, error) {
	st, err := store.Open(ctx, cfg.Database.StateDatabaseURL(), cfg.Database.Schema)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("%w: %w", ErrDatabase, pgconnect.Explain(err))
	}
	box, err := SecretBox(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	st.UseSecrets(box)
	return st, nil
}

// Events works out the event catalogue of the configured database, for the
// `relay events` command.
func Events(ctx context.Context, cfg *config.Config) (Catalogue, error) {
	m, err := NewMapper(cfg)
	if err != nil {
		return Catalogue{}, err
	}
	conn, err := connect(ctx, cfg.Database.URL)
	if err != nil {
		return Catalogue{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return Inspect(ctx, conn, m)
}

// Print writes the catalogue as a table, or as JSON.
func (c Catalogue) Print(w io.Writer, asJSON bool) error {
	if asJSON {
		// The admin API's GET /v1/events names the offered types "events";
		// the rest is what only the database's side knows.
		out := struct {
			Events      []string          `json:"events"`
			Unavailable map[string]string `json:"unavailable"`
			Tables      []string          `json:"tables"`
			Problems    []string          `json:"problems"`
		}{nonNil(c.Available), c.Unavailable, nonNil(c.Tables), nonNil(c.Problems)}
		if out.Unavailable == nil {
			out.Unavailable = map[string]string{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tAVAILABLE\tNOTE")
	for _, ev := range c.Available {
		fmt.Fprintf(tw, "%s\tyes\t\n", ev)
	}
	for _, ev := range keys(c.Unavailable) {
		fmt.Fprintf(tw, "%s\tno\t%s\n", ev, c.Unavailable[ev])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range c.Problems {
		fmt.Fprintln(w, "problem:", p)
	}
	return nil
}

// nonNil is s, or an empty list for nil, so that JSON shows [] not null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// DropSlot drops the replication slot and forgets the relay's position and
// row record, so that the next start creates and seeds a new slot.
func DropSlot(ctx context.Context, cfg *config.Config) error {
	conn, err := connect(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	slot, err := cdc.Slot(ctx, conn, cfg.Replication.Slot)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	if slot.Active {
		return fmt.Errorf("slot %s is in use by backend pid %d: stop every relay first", cfg.Replication.Slot, slot.ActivePID)
	}
	if slot.Exists {
		if err := cdc.DropSlot(ctx, conn, cfg.Replication.Slot); err != nil {
			return err
		}
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	return st.ForgetSlot(ctx, cfg.Replication.Slot)
}

// ForwardSlot moves the relay's position forward to where its replication
// slot was confirmed, after the state database was restored from an older
// backup (cdc.ErrPositionBehind), and returns both positions. The slot
// keeps everything after its confirmed position, so only the changes
// between the two are not delivered again: they were stored, and most of
// their deliveries sent, before the state database lost them.
func ForwardSlot(ctx context.Context, cfg *config.Config) (from, to event.LSN, err error) {
	conn, err := connect(ctx, cfg.Database.URL)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	name := cfg.Replication.Slot
	slot, err := cdc.Slot(ctx, conn, name)
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("%w: %w", ErrDatabase, err)
	case !slot.Exists:
		return 0, 0, fmt.Errorf("slot %s does not exist: nothing to forward to; see the README, section 'Recovering a lost slot'", name)
	case slot.WALStatus == "lost":
		return 0, 0, fmt.Errorf("slot %s was invalidated (it lost the WAL it needed): nothing can be read from it; see the README, section 'Recovering a lost slot' (relay slot drop)", name)
	case slot.Active:
		return 0, 0, fmt.Errorf("slot %s is in use by backend pid %d: stop every relay first", name, slot.ActivePID)
	}
	st, err := openStore(ctx, cfg)
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	pos, state, err := st.Position(ctx, name)
	switch {
	case err != nil:
		return 0, 0, fmt.Errorf("%w: %w", ErrDatabase, err)
	case !store.Ready(state):
		return 0, 0, fmt.Errorf("the relay has no position for slot %s in its state database: nothing to forward", name)
	case slot.ConfirmedFlush <= pos:
		return 0, 0, fmt.Errorf("the relay's position %s is not behind slot %s, which is confirmed up to %s: nothing to forward", pos, name, slot.ConfirmedFlush)
	}
	if err := st.ForwardPosition(ctx, name, slot.ConfirmedFlush); err != nil {
		return 0, 0, fmt.Errorf("%w: %w", ErrDatabase, err)
	}
	return pos, slot.ConfirmedFlush, nil
}

// SecretBox builds the encryption of webhook secrets from secrets.key and
// secrets.previous_keys; nil (plain text) without a key.
func SecretBox(cfg *config.Config) (*secrets.Box, error) {
	if cfg.Secrets.Key == "" {
		return nil, nil
	}
	key, err := secrets.ParseKey(cfg.Secrets.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: secrets.key %v", ErrConfig, err)
	}
	var previous [][]byte
	for i, k := range cfg.Secrets.PreviousKeys {
		b, err := secrets.ParseKey(k)
		if err != nil {
			return nil, fmt.Errorf("%w: secrets.previous_keys[%d] %v", ErrConfig, i, err)
		}
		previous = append(previous, b)
	}
	box, err := secrets.New(key, previous...)
	if err != nil {
		return nil, fmt.Errorf("%w: secrets: %v", ErrConfig, err)
	}
	return box, nil
}
