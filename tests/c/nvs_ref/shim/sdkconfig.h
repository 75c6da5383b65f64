// Host stand-in: no sdkconfig options (ESP-IDF defaults).
#pragma once
