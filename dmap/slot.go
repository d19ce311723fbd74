package dmap

// Keys hash to Redis Cluster's 16,384 slots (CRC16-CCITT/XMODEM of the key,
// or of its hash tag), and slots map onto the partition table's partitions
// in contiguous ranges, so that a Redis Cluster client can route a key to
// its owner from a slot map and every key of one hash tag lands in one
// partition.

// Slots is the number of hash slots, as in Redis Cluster.
const Slots = 16384

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

// crc16 is CRC16-CCITT (XMODEM), Redis Cluster's key hash.
func crc16(s string) uint16 {
	var c uint16
	for i := 0; i < len(s); i++ {
		c = c<<8 ^ crcTable[byte(c>>8)^s[i]]
	}
	return c
}

// HashTag is the part of key that is hashed: the text between the first
// '{' and the first '}' after it, if that is not empty; else the whole key.
func HashTag(key string) string {
	for i := 0; i < len(key); i++ {
		if key[i] == '{' {
			for j := i + 1; j < len(key); j++ {
				if key[j] == '}' {
					if j == i+1 {
						return key
					}
					return key[i+1 : j]
				}
			}
			return key
		}
	}
	return key
}

// Slot is key's hash slot, 0 to Slots-1.
func Slot(key string) int { return int(crc16(HashTag(key)) & (Slots - 1)) }

// PartitionOfSlot maps a slot onto one of n partitions: slots are cut into
// n contiguous ranges of nearly equal size.
func PartitionOfSlot(slot, n int) int { return slot * n / Slots }

// SlotRange is the first and last slot of partition p of n.
func SlotRange(p, n int) (first, last int) {
	first = (p*Slots + n - 1) / n
	last = ((p+1)*Slots+n-1)/n - 1
	return first, last
}

// PartitionOf is key's partition of n.
func PartitionOf(key string, n int) int { return PartitionOfSlot(Slot(key), n) }
