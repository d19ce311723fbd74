package rest

import (
	"hash/fnv"
	"testing"
)

// keyBucket must be 32-bit FNV-1a modulo spaceBuckets on every node and in
// every build (a writer and a reader on different builds must agree on a
// parent's bucket): checked against hash/fnv.
func TestKeyBucketIsFNV1a(t *testing.T) {
	for _, key := range []string{"", "A", "PROJ", "INFR", "CHAOS_7", "a-much-longer-project-key-0123456789", "\xff\x00é"} {
		h := fnv.New32a()
		h.Write([]byte(key))
		if want := int(h.Sum32() % spaceBuckets); keyBucket(key) != want {
			t.Errorf("keyBucket(%q) = %d, FNV-1a gives %d", key, keyBucket(key), want)
		}
	}
}
