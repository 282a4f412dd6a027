COPY `IN` FROM $data
