#ifndef EMBEDDED_DATA_H
#define EMBEDDED_DATA_H

/// MovieLens ml-latest-small `ratings.csv.gz`, compiled into the binary (C23 #embed): its bytes,
/// and their count in `*size`.
const unsigned char *hstu_ml_latest_small_ratings_gz(unsigned long *size);

#endif
