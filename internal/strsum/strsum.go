// Package strsum hashes strings without the allocation of a []byte conversion on hot paths:
// a string of at most StackBytes bytes is hashed from a copy on the stack.
package strsum

import "crypto/sha256"

// StackBytes bounds the strings hashed from a stack copy; a longer one is converted (one
// allocation).
const StackBytes = 512

// SHA256 returns the SHA-256 of s, as sha256.Sum256([]byte(s)) does.
func SHA256(s string) [sha256.Size]byte {
	if len(s) <= StackBytes {
		var buf [StackBytes]byte
		return sha256.Sum256(buf[:copy(buf[:], s)])
	}
	return sha256.Sum256([]byte(s))
}
