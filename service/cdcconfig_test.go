package service_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/service"
)

// replication.group_delay is the change feed's delay for a group of which
// every delivery went ahead; the other settings of the section go with it.
func TestCDCConfigFromReplication(t *testing.T) {
	cfg := config.Default()
	cfg.Replication.GroupDelay = 7 * time.Millisecond
	cfg.Replication.StatusInterval = 3 * time.Second
	cfg.Replication.HeartbeatInterval = time.Minute
	c := service.CDCConfig(cfg, service.Catalogue{Tables: []string{"tasks"}}, slog.New(slog.DiscardHandler))
	if c.SentGroupDelay != 7*time.Millisecond || c.StatusInterval != 3*time.Second || c.HeartbeatInterval != time.Minute {
		t.Fatalf("SentGroupDelay %v, StatusInterval %v, HeartbeatInterval %v; want 7ms, 3s, 1m", c.SentGroupDelay, c.StatusInterval, c.HeartbeatInterval)
	}
}
