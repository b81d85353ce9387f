package coordinator

import (
	"fmt"
	"time"
)

// Damaged blobs. ReadPaper verifies what it streams; a blob that is missing, truncated, longer
// than its record or of another SHA-256 ends the read with DATA_LOSS and is reported to the
// loop. The loop then stops handing it out as a cache hit (by paper id, URL or DOI) and has
// the collector remove it from the blob store: fetchers store identical content once and do not
// rewrite an existing key, so a damaged blob must go before a new download can repair it.
// Completions of leases assigned before the removal are refused like those of a collected blob
// (delete.go); the first verified completion of the key afterwards means the blob was written
// again, which repairs every paper that shares it, and makes it a cache hit again. The set is
// persisted (bucket "damaged"), so that a restart, such as the next `paperfetch get`, neither
// hands the blob out as a cache hit again nor forgets to remove it.

// maxDamagedBlobs bounds the set of damaged blobs remembered.
const maxDamagedBlobs = 100_000

// blobDamagedMsg reports a blob ReadPaper found damaged (sent by the handler, never blocking).
type blobDamagedMsg struct {
	key string
}

func (m *blobDamagedMsg) apply(e *engine, _ time.Time) { e.blobDamaged(m.key) }

// blobDamaged takes key out of the cache and queues its removal from the blob store.
func (e *engine) blobDamaged(key string) {
	if _, known := e.damaged[key]; known {
		return
	}
	if e.damaged == nil {
		e.damaged = make(map[string]struct{})
	}
	if len(e.damaged) >= maxDamagedBlobs {
		e.log.Error("damaged blob not remembered: too many damaged blobs", "blob", key, "limit", maxDamagedBlobs)
		return
	}
	e.damaged[key] = struct{}{}
	e.ws.damaged = append(e.ws.damaged, key)
	e.m.damagedBlobs.Inc()
	e.log.Error("blob damaged: no more cache hits on it, removing it from the blob store", "blob", key)
	e.collectOut = append(e.collectOut, e.noteCollectable([]string{key})...)
}

// blobUsable reports whether a SUCCEEDED paper's blob may serve a cache hit.
func (e *engine) blobUsable(key string) bool {
	_, bad := e.damaged[key]
	return key != "" && !bad
}

// blobRepaired forgets a damaged blob once a completion of it was verified.
func (e *engine) blobRepaired(key string) {
	if _, ok := e.damaged[key]; ok {
		delete(e.damaged, key)
		e.ws.repaired = append(e.ws.repaired, key)
	}
}

// loadDamaged restores the damaged blobs of the store (at most maxDamagedBlobs) and hands them
// to the collector again: one found damaged just before a restart may not be removed yet.
func (e *engine) loadDamaged() error {
	keys, err := e.stored.damaged()
	if err != nil {
		return fmt.Errorf("damaged blobs: %w", err)
	}
	if len(keys) == 0 {
		return nil
	}
	e.damaged = make(map[string]struct{}, min(len(keys), maxDamagedBlobs))
	for _, k := range keys[:min(len(keys), maxDamagedBlobs)] {
		e.damaged[k] = struct{}{}
	}
	e.collectOut = append(e.collectOut, e.noteCollectable(keys)...)
	return nil
}
