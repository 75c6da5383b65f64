// Host stand-in: the loader harness supplies its own nvs::Partition.
#pragma once
