//! The full examination of `/proc`. (Being written.)
