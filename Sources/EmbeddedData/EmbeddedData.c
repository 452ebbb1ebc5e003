// The embedded default dataset: its bytes are part of the static binary, so `hstu train` with no
// --data runs wherever the binary is copied (no resource bundle to find at run time).
#include "EmbeddedData.h"

#pragma clang diagnostic ignored "-Wc23-extensions"
static const unsigned char ratings[] = {
#embed "ml-latest-small/ratings.csv.gz"
};

const unsigned char *hstu_ml_latest_small_ratings_gz(unsigned long *size) {
  *size = sizeof(ratings);
  return ratings;
}
