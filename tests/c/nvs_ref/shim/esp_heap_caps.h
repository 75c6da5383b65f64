// Host stand-in: plain malloc.
#pragma once
