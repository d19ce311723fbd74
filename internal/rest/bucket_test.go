package rest

import (
	"hash/fnv"
	"testing"
)

// keyBucket must be 32-bit FNV-1a modulo spaceBuckets on every node and in
// every build of the same bucket count (a writer and a reader must agree
// on a parent's bucket): checked against hash/fnv.
func TestKeyBucketIsFNV1a(t *testing.T) {
	for _, key := range []string{"", "A", "PROJ", "INFR", "CHAOS_7", "a-much-longer-project-key-0123456789", "\xff\x00é"} {
		h := fnv.New32a()
		h.Write([]byte(key))
		if want := int(h.Sum32() % spaceBuckets); keyBucket(key) != want {
			t.Errorf("keyBucket(%q) = %d, FNV-1a gives %d", key, keyBucket(key), want)
		}
	}
}

// The coupling benchmark's pull requests (IDs 1 to 2,000) share a comment
// bucket at most two at a time, so a comment on one drops the cached
// comment lists of at most one other (with 64 buckets, 31 others).
func TestPullRequestsShareABucketAtMostTwoAtATime(t *testing.T) {
	per := map[int]int{}
	for id := int64(1); id <= 2000; id++ {
		per[idBucket(id)]++
	}
	for b, n := range per {
		if n > 2 {
			t.Fatalf("bucket %d holds %d of pull requests 1..2000; want at most 2", b, n)
		}
	}
}
