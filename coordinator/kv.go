package coordinator

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// The store is written against a key-value store in bbolt's shape (named buckets of sorted
// keys, one read-write transaction at a time): kvStore. In production it is the bbolt file
// (boltKV, the only code that sees bbolt's types); the tests also run the engine on an
// in-memory one (memKV, memstore_test.go), with the same encoding, commit and reads.

// kvStore is a transactional key-value store.
type kvStore interface {
	// view begins a read-only transaction: a snapshot, valid until end is called.
	view() (tx kvTx, end func(), err error)
	// update runs fn in one read-write transaction, committed (and synced) when fn returns nil.
	update(fn func(kvTx) error) error
}

// kvTx is a transaction: the buckets of the store (bucketMeta, bucketPapers...).
type kvTx interface {
	bucket(name string) kvBucket
}

// kvBucket is one bucket of a transaction. Values returned by Get are valid until the
// transaction ends; ForEach visits the keys in byte order and fn must not change the bucket.
type kvBucket interface {
	Get(k []byte) []byte
	Put(k, v []byte) error
	Delete(k []byte) error
	ForEach(fn func(k, v []byte) error) error
	// last returns the greatest key (nil when empty).
	last() []byte
}

// boltKV is the coordinator's bbolt file as a kvStore.
type boltKV struct{ db *bolt.DB }

func (s boltKV) view() (kvTx, func(), error) {
	tx, err := s.db.Begin(false)
	if err != nil {
		return nil, nil, fmt.Errorf("begin read: %w", err)
	}
	return boltTx{tx}, func() { _ = tx.Rollback() }, nil
}

func (s boltKV) update(fn func(kvTx) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) bucket(name string) kvBucket {
	b := t.tx.Bucket([]byte(name))
	if t.tx.Writable() {
		// Keys of these buckets only grow (appends): pack the pages.
		switch name {
		case bucketHosts, bucketPapers:
			b.FillPercent = 0.95
		case bucketSpecs, bucketNewRefs:
			b.FillPercent = 1.0
		case bucketResults:
			b.FillPercent = 0.9
		}
	}
	return boltBucket{b}
}

type boltBucket struct{ *bolt.Bucket }

// kvGetter looks keys up in one bucket, as kvBucket.Get.
type kvGetter interface {
	Get(k []byte) []byte
}

// getterOf returns a kvGetter of b for many lookups by one goroutine, within b's transaction.
// bbolt's Bucket.Get makes a new cursor per lookup and grows its stack one level at a time
// (2-3 allocations per lookup at the depth of the papers buckets); a boltGetter reuses one
// cursor and its stack.
func getterOf(b kvBucket) kvGetter {
	if bb, ok := b.(boltBucket); ok && bb.Bucket != nil {
		return &boltGetter{c: bb.Cursor()}
	}
	return b
}

// boltGetter is a kvGetter over one reused bbolt cursor (not safe for concurrent use).
type boltGetter struct{ c *bolt.Cursor }

// Get returns the value of k, nil when k is absent or names a nested bucket (as Bucket.Get).
func (g *boltGetter) Get(k []byte) []byte {
	key, v := g.c.Seek(k)
	if !bytes.Equal(key, k) {
		return nil
	}
	return v
}

func (b boltBucket) last() []byte {
	k, _ := b.Cursor().Last()
	return k
}
